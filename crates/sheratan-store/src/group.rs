//! What both backends' group-committing writers share: the operations they take from their
//! channel, and answers held back until the group's commit says whether to send them.

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::{
    ExtendOutcome, FinishOutcome, HolderRule, JobRecord, JobSpec, LeaseGrant, LeaseOrder,
    QueueState, ResultReport, StoreError, SubmitOutcome, TickReport,
};

pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One write, as the store's methods hand it to a writer.
pub enum Op {
    Submit(Vec<JobSpec>, Reply<Vec<SubmitOutcome>>),
    Lease(LeaseOrder, Reply<LeaseGrant>),
    Extend(
        Uuid,
        Option<u32>,
        Option<Box<HolderRule>>,
        Reply<ExtendOutcome>,
    ),
    Finish(ResultReport, Reply<FinishOutcome>),
    Cancel(Uuid, Reply<Option<JobRecord>>),
    Requeue(Uuid, Reply<Option<JobRecord>>),
    Tick(Reply<TickReport>),
    Ack(Vec<Uuid>, Reply<u64>),
    Settings(
        String,
        Box<sheratan_proto::queues::QueueSettingsPatch>,
        Reply<Result<sheratan_proto::queues::QueueSettings, String>>,
    ),
    Purge(String, Reply<(u64, QueueState)>),
    DeleteFinished(Vec<Uuid>, Reply<u64>),
    /// (lease, JSON of the job's progress).
    Progress(Vec<(Uuid, String)>, Reply<u64>),
    ExpireKeys(time::OffsetDateTime, Reply<u64>),
    /// Retention: finished jobs past their cutoffs, at most this many.
    Expire(
        crate::retention::RetentionRules,
        u32,
        Reply<crate::retention::PurgeReport>,
    ),
}

/// An answer held back until the group's commit.
pub trait Held: Send {
    fn send(self: Box<Self>, commit: Result<(), &StoreError>);
}

pub struct Answer<T> {
    pub reply: Reply<T>,
    /// `None` when the operation failed (the group fails with it).
    pub value: Option<T>,
}

impl<T: Send> Held for Answer<T> {
    fn send(self: Box<Self>, commit: Result<(), &StoreError>) {
        let outcome = match (commit, self.value) {
            (Ok(()), Some(value)) => Ok(value),
            (Err(err), _) => Err(err.clone()),
            (Ok(()), None) => Err(StoreError::Internal("operation lost its answer".into())),
        };
        let _ = self.reply.send(outcome);
    }
}

/// Holds an operation's outcome until the commit; a failed operation fails the group, so its
/// error is passed on.
pub fn hold<T: Send + 'static, E>(
    held: &mut Vec<Box<dyn Held>>,
    reply: Reply<T>,
    work: Result<T, E>,
) -> Result<(), E> {
    let (value, outcome) = match work {
        Ok(value) => (Some(value), Ok(())),
        Err(err) => (None, Err(err)),
    };
    held.push(Box::new(Answer { reply, value }));
    outcome
}

/// An operation the group never reached: it is answered with the group's error.
pub fn unanswered(op: Op) -> Box<dyn Held> {
    fn none<T: Send + 'static>(reply: Reply<T>) -> Box<dyn Held> {
        Box::new(Answer { reply, value: None })
    }
    match op {
        Op::Submit(_, r) => none(r),
        Op::Lease(_, r) => none(r),
        Op::Extend(_, _, _, r) => none(r),
        Op::Finish(_, r) => none(r),
        Op::Cancel(_, r) => none(r),
        Op::Requeue(_, r) => none(r),
        Op::Tick(r) => none(r),
        Op::Ack(_, r) => none(r),
        Op::Settings(_, _, r) => none(r),
        Op::Purge(_, r) => none(r),
        Op::Progress(_, r) => none(r),
        Op::DeleteFinished(_, r) => none(r),
        Op::ExpireKeys(_, r) => none(r),
        Op::Expire(_, _, r) => none(r),
    }
}
