//! Retention (docs/API.md, "Retention"): which finished jobs are old enough to delete, as both
//! stores read it. A purge deletes at most a small batch, oldest first, so it never holds the
//! writer long; the hub calls it again while there is more.

use time::OffsetDateTime;
use uuid::Uuid;

/// Finished before these times, jobs go; `None` keeps them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cutoffs {
    /// Completed and cancelled jobs.
    pub done: Option<OffsetDateTime>,
    /// Failed jobs (the dead set).
    pub failed: Option<OffsetDateTime>,
}

/// The cutoffs of every queue: those with retention settings of their own, and the hub's for
/// the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionRules {
    pub default: Cutoffs,
    pub queues: Vec<(String, Cutoffs)>,
}

/// Which jobs one delete statement takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One queue's.
    Queue(&'a str),
    /// Every queue but these (the ones with settings of their own).
    Others(Vec<&'a str>),
}

/// One delete: jobs of `scope` in one of `statuses` finished before `before_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass<'a> {
    pub scope: Scope<'a>,
    /// Status codes as both stores keep them: 2 completed, 3 failed, 4 cancelled.
    pub statuses: &'static [i16],
    pub before_ms: i64,
}

const DONE: &[i16] = &[2, 4];
const FAILED: &[i16] = &[3];

impl RetentionRules {
    /// Whether anything can ever be deleted under these rules.
    pub fn is_empty(&self) -> bool {
        let none = |c: &Cutoffs| c.done.is_none() && c.failed.is_none();
        none(&self.default) && self.queues.iter().all(|(_, c)| none(c))
    }

    /// The deletes these rules come to, queues with their own settings first.
    pub fn passes(&self) -> Vec<Pass<'_>> {
        fn add<'a>(passes: &mut Vec<Pass<'a>>, scope: Scope<'a>, c: &Cutoffs) {
            for (statuses, cutoff) in [(DONE, c.done), (FAILED, c.failed)] {
                if let Some(t) = cutoff {
                    passes.push(Pass {
                        scope: scope.clone(),
                        statuses,
                        before_ms: (t.unix_timestamp_nanos() / 1_000_000) as i64,
                    });
                }
            }
        }
        let mut passes = Vec::new();
        for (queue, c) in &self.queues {
            add(&mut passes, Scope::Queue(queue), c);
        }
        let others = Scope::Others(self.queues.iter().map(|(q, _)| q.as_str()).collect());
        add(&mut passes, others, &self.default);
        passes
    }
}

/// What a purge deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub deleted: u64,
    /// The newest id it deleted (ids are UUIDv7: they sort by creation time).
    pub newest: Option<Uuid>,
    /// Space still to give back to the file system (SQLite's free pages; 0 elsewhere): the
    /// purger keeps calling while there is some.
    pub free_pages: u64,
}
