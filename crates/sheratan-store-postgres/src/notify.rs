//! Wake-ups across hubs: writers poke the notifier after their commits; it sends one
//! `pg_notify` at a time on its own connection, so a burst of commits costs one notification,
//! and no writer's transaction ever takes NOTIFY's commit lock. Every hub's listener wakes
//! its long polls, except for notifications the hub sent itself (its writers woke them already).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc, watch};

use crate::conn::{Target, quote_ident};

const READY: u8 = 1;
const FINISHED: u8 = 2;

/// What the hub's writers committed since the last notification.
pub struct Notifier {
    pending: AtomicU8,
    wake: Notify,
    /// Tells this hub's own notifications apart from other hubs'.
    pub instance: String,
}

impl Notifier {
    pub fn new() -> Notifier {
        Notifier {
            pending: AtomicU8::new(0),
            wake: Notify::new(),
            instance: format!("{:016x}", rand::random::<u64>()),
        }
    }

    pub fn poke(&self, ready: bool, finished: bool) {
        let bits = if ready { READY } else { 0 } | if finished { FINISHED } else { 0 };
        if bits != 0 {
            self.pending.fetch_or(bits, Ordering::AcqRel);
            self.wake.notify_one();
        }
    }
}

/// Payload: `ready`, `finished` or `ready,finished`, then `@` and the sending hub's instance.
fn payload(bits: u8, instance: &str) -> String {
    let what = match (bits & READY != 0, bits & FINISHED != 0) {
        (true, true) => "ready,finished",
        (true, false) => "ready",
        _ => "finished",
    };
    format!("{what}@{instance}")
}

/// Sends the notifications, until the store is dropped (the task is aborted).
pub async fn send(target: Arc<Target>, channel: String, notifier: Arc<Notifier>) {
    let mut client = None;
    loop {
        notifier.wake.notified().await;
        let bits = notifier.pending.swap(0, Ordering::AcqRel);
        if bits == 0 {
            continue;
        }
        let payload = payload(bits, &notifier.instance);
        // A notification that cannot be sent is not fatal: long polls on other hubs still
        // wake at their deadline, and their next lease sees the jobs.
        for attempt in 1..=3u32 {
            if client
                .as_ref()
                .is_none_or(tokio_postgres::Client::is_closed)
            {
                client = target.connect().await.ok();
            }
            let Some(c) = client.as_ref() else {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                continue;
            };
            match c
                .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                .await
            {
                Ok(_) => break,
                Err(err) => {
                    tracing::debug!("postgres store: cannot notify other hubs: {err}");
                    client = None;
                }
            }
        }
    }
}

/// Listens for other hubs' notifications and wakes this hub's long polls.
pub async fn listen(
    target: Arc<Target>,
    channel: String,
    instance: String,
    ready: watch::Sender<u64>,
    finished: watch::Sender<u64>,
) {
    let mut backoff = Duration::from_millis(200);
    let own = format!("@{instance}");
    loop {
        let connected = tokio_postgres::connect(&target.url, tokio_postgres::NoTls).await;
        let (client, mut connection) = match connected {
            Ok(c) => c,
            Err(err) => {
                tracing::debug!("postgres store: listener cannot connect: {err}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = message {
                    let _ = tx.send(n.payload().to_owned());
                }
            }
        });
        if client
            .batch_execute(&format!("LISTEN {}", quote_ident(&channel)))
            .await
            .is_ok()
        {
            backoff = Duration::from_millis(200);
            // Whatever other hubs committed while we were not listening (before the first
            // subscription too) wakes the long polls once; it also tells tests the listener
            // is subscribed.
            ready.send_modify(|g| *g += 1);
            finished.send_modify(|g| *g += 1);
            while let Some(payload) = rx.recv().await {
                if payload.ends_with(&own) {
                    continue;
                }
                if payload.contains("ready") {
                    ready.send_modify(|g| *g += 1);
                }
                if payload.contains("finished") {
                    finished.send_modify(|g| *g += 1);
                }
            }
        }
        driver.abort();
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_what_changed_and_who_sent_it() {
        assert_eq!(payload(READY, "a"), "ready@a");
        assert_eq!(payload(FINISHED, "a"), "finished@a");
        assert_eq!(payload(READY | FINISHED, "b"), "ready,finished@b");
    }
}
