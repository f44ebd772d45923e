//! Timers of a test job: one timer service per subtask, a model of the timers registered,
//! and firing every due timer of every subtask.

use std::collections::BTreeSet;

use cairn::{KeyedStateStore, MaxParallelism, TimeDomain, TimerService, Utf8};

use super::job::Job;

/// The timer service every test job uses.
pub const SERVICE: &str = "window-end";

/// A timer as the model sees it: its domain, timestamp, key and namespace.
pub type ModelTimer = (TimeDomain, u64, String, Vec<u8>);

/// The timers registered and not fired or deleted.
pub type Timers = BTreeSet<ModelTimer>;

/// The order timers fire in: by timestamp, then by their stored key (key group first).
pub fn firing_order(max: MaxParallelism, timer: &ModelTimer) -> (u64, Vec<u8>) {
    let (_, timestamp, key, namespace) = timer;
    let mut stored = Vec::new();
    let key_group = max.key_group_of(key.as_bytes());
    cairn::layout::write_timer_key(
        &mut stored,
        key_group,
        *timestamp,
        key.as_bytes(),
        namespace,
    );
    (*timestamp, stored)
}

/// A timer service on each subtask of `job`, its watermark and processing time unset.
pub fn services(job: &Job) -> Vec<TimerService<String>> {
    job.subtasks.iter().map(service).collect()
}

pub fn service(store: &KeyedStateStore) -> TimerService<String> {
    store.timer_service(SERVICE, Utf8).unwrap()
}

/// Registers `timer` on the subtask that owns its key.
pub fn register(job: &Job, services: &mut [TimerService<String>], timer: &ModelTimer) {
    let (domain, timestamp, key, namespace) = timer;
    let service = &mut services[job.owner(key)];
    match domain {
        TimeDomain::EventTime => service.register_event_time_timer(key, namespace, *timestamp),
        TimeDomain::ProcessingTime => {
            service.register_processing_time_timer(key, namespace, *timestamp)
        }
    }
    .unwrap();
}

/// Deletes `timer` on the subtask that owns its key.
pub fn delete(job: &Job, services: &mut [TimerService<String>], timer: &ModelTimer) {
    let (domain, timestamp, key, namespace) = timer;
    let service = &mut services[job.owner(key)];
    match domain {
        TimeDomain::EventTime => service.delete_event_time_timer(key, namespace, *timestamp),
        TimeDomain::ProcessingTime => {
            service.delete_processing_time_timer(key, namespace, *timestamp)
        }
    }
    .unwrap();
}

/// Advances every subtask's time of `domain` to `to` and polls every due timer: what each
/// subtask fired, in the order it fired them.
pub fn fire(
    services: &mut [TimerService<String>],
    domain: TimeDomain,
    to: u64,
) -> Vec<Vec<ModelTimer>> {
    services
        .iter_mut()
        .map(|service| {
            let mut fired = Vec::new();
            loop {
                let timer = match domain {
                    TimeDomain::EventTime => {
                        service.advance_watermark(to);
                        service.poll_event_time()
                    }
                    TimeDomain::ProcessingTime => {
                        service.advance_processing_time(to);
                        service.poll_processing_time()
                    }
                };
                match timer.unwrap() {
                    Some(t) => fired.push((domain, t.timestamp, t.key, t.namespace)),
                    None => break,
                }
            }
            fired
        })
        .collect()
}

/// What each subtask of `job` must fire when the time of `domain` reaches `to`: the model's
/// due timers on their owners, in firing order. Removes them from the model.
pub fn expect_fired(
    job: &Job,
    model: &mut Timers,
    domain: TimeDomain,
    to: u64,
) -> Vec<Vec<ModelTimer>> {
    let due: Vec<ModelTimer> = model
        .iter()
        .filter(|t| t.0 == domain && t.1 <= to)
        .cloned()
        .collect();
    let mut per_subtask = vec![Vec::new(); job.subtasks.len()];
    for timer in due {
        model.remove(&timer);
        per_subtask[job.owner(&timer.2)].push(timer);
    }
    for fired in &mut per_subtask {
        fired.sort_by_key(|t| firing_order(job.max, t));
    }
    per_subtask
}
