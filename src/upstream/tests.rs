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
