use super::*;

/// The per-host map holds the hosts with requests in progress, not every name ever seen.
#[tokio::test]
async fn hosts_without_requests_in_progress_are_pruned() {
    let per_host = PerHost::new(2);
    let busy = per_host
        .semaphore("busy.twilio.com")
        .await
        .try_acquire_owned()
        .unwrap();
    for i in 0..100 {
        let _ = per_host.semaphore(&format!("h{i}.twilio.com")).await;
    }
    let hosts = per_host.hosts.lock().await;
    assert!(hosts.len() <= 2, "{} hosts kept", hosts.len());
    assert!(hosts.contains_key("busy.twilio.com"));
    drop(hosts);
    drop(busy);
}

/// A host's semaphore is never dropped while a request holds it or is about to: every core
/// asking for the host gets the same one, however other hosts come and go.
#[tokio::test]
async fn a_held_semaphore_is_never_replaced() {
    let per_host = PerHost::new(1);
    let first = per_host.semaphore("api.twilio.com").await;
    for i in 0..10 {
        let _ = per_host.semaphore(&format!("h{i}.twilio.com")).await;
    }
    let again = per_host.semaphore("api.twilio.com").await;
    assert!(Arc::ptr_eq(&first, &again));
}
