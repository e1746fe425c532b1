use super::*;

/// The per-host map holds the hosts with requests in progress, not every name ever seen.
#[test]
fn hosts_without_requests_in_progress_are_pruned() {
    let per_host = PerHost::new(2);
    let busy = per_host
        .semaphore("busy.twilio.com")
        .try_acquire_owned()
        .unwrap();
    for i in 0..100 {
        let _ = per_host.semaphore(&format!("h{i}.twilio.com"));
    }
    let hosts = per_host.hosts.load();
    assert!(hosts.len() <= 2, "{} hosts kept", hosts.len());
    assert!(hosts.contains_key("busy.twilio.com"));
    drop(busy);
}

/// Requests to a new host at once share one semaphore: the host's own entry is never pruned
/// while it is asked for, even with every permit free.
#[test]
fn a_new_hosts_semaphore_is_the_same_for_every_request() {
    let per_host = PerHost::new(1);
    let first = per_host.semaphore("api.twilio.com");
    let again = per_host.semaphore("api.twilio.com");
    assert!(Arc::ptr_eq(&first, &again));
    let _ = per_host.semaphore("other.twilio.com");
    // `first` is still held (a request about to take a permit): pruning keeps it.
    assert!(Arc::ptr_eq(&first, &per_host.semaphore("api.twilio.com")));
}
