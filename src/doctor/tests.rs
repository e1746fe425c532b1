use super::*;

#[test]
fn the_verdict_is_all_passed_some_not_run_or_some_failed() {
    let passed = Check::passed("a", None, String::new());
    let not_run = Check::not_run("b", None, String::new(), String::new());
    let failed = Check::failed("c", None, String::new(), "");
    assert_eq!(verdict(std::slice::from_ref(&passed)), Verdict::AllPassed);
    assert_eq!(
        verdict(&[passed.clone(), not_run.clone()]),
        Verdict::SomeNotRun
    );
    assert_eq!(verdict(&[passed, not_run, failed]), Verdict::SomeFailed);
}

#[test]
fn the_clock_fails_beyond_the_token_window_and_says_which_way() {
    let now = SystemTime::now();
    assert_eq!(clock(Some(now)).outcome, Outcome::Passed);
    let noted = clock(Some(now - Duration::from_secs(60)));
    assert_eq!(noted.outcome, Outcome::Passed);
    assert!(noted.detail.contains("fix NTP"), "{}", noted.detail);
    let ahead = clock(Some(now - Duration::from_secs(400)));
    assert_eq!(ahead.outcome, Outcome::Failed);
    assert!(ahead.advice.unwrap().contains("20155"));
    let behind = clock(Some(now + Duration::from_secs(400)));
    assert!(behind.advice.unwrap().contains("20156"));
    assert_eq!(clock(None).outcome, Outcome::NotRun);
}

#[test]
fn a_refusal_carries_twilio_code_the_tables_advice_and_the_likely_cause() {
    let answer = Answer {
        status: StatusCode::UNAUTHORIZED,
        date: None,
        body: Bytes::from_static(br#"{"code": 20003, "message": "Authenticate"}"#),
    };
    let check = refused("signed call", "AC1", &answer, |_| "the key".to_owned());
    assert_eq!(check.twilio_code, Some(20003));
    assert!(check.detail.contains("(Authenticate)") && check.detail.contains("here: the key"));
    assert!(check.advice.as_deref().unwrap().contains("keys list"));
    let json = check.to_json();
    assert_eq!(json["result"], "failed");
    assert_eq!(json["account"], "AC1");
}

#[test]
fn the_main_key_debug_leaves_the_secret_out() {
    let main = MainCredentials::new("AC1", "SK1", "hunter2");
    assert!(!format!("{main:?}").contains("hunter2"));
}
