//! The runner itself: deterministic for a seed, and a short run of every target is clean.

use std::time::Duration;

use pkcv_fuzz::runner::{self, Mutator, Options, Outcome};
use pkcv_fuzz::TARGETS;

#[test]
fn a_seed_gives_the_same_inputs() {
    let sequence = |seed| {
        let mut mutator = Mutator::new(seed, TARGETS[0].dictionary, 512);
        let mut last = b"/2010-04-01/Accounts.json?PageSize=50".to_vec();
        (0..500)
            .map(|i| {
                last = if i % 7 == 0 {
                    mutator.fresh()
                } else {
                    mutator.mutate(&last, b"/v1?a=b")
                };
                runner::content_hash(&last)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(sequence(7), sequence(7));
    assert_ne!(sequence(7), sequence(8));
}

#[test]
fn mutants_stay_within_the_length_limit() {
    let mut mutator = Mutator::new(1, TARGETS[2].dictionary, 64);
    let mut input = vec![b'a'; 64];
    for _ in 0..2000 {
        input = mutator.mutate(&input, &[b'b'; 64]);
        assert!(input.len() <= 64);
    }
}

/// A few thousand inputs of each target from its committed corpus: no property fails (known
/// bugs tolerated, as in CI).
#[test]
fn every_target_runs_clean_briefly() {
    pkcv_fuzz::known::tolerate(true);
    let crashes = std::env::temp_dir().join(format!("pkcv-fuzz-test-{}", std::process::id()));
    for target in TARGETS {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let options = Options {
            seconds: 30.0,
            runs: Some(3000),
            corpus: vec![dir.join("corpus").join(target.name)],
            seed: 1,
            crashes: crashes.clone(),
            max_len: 1024,
            timeout: Duration::from_secs(30),
        };
        match runner::run(target, &options).expect("runs") {
            Outcome::Clean(stats) => assert!(stats.execs >= stats.corpus_files as u64),
            Outcome::Crashed(_, crash) => panic!("{}: {}", target.name, crash.message),
        }
    }
    pkcv_fuzz::known::tolerate(false);
}

#[test]
fn a_failing_input_is_minimized_to_the_same_failure() {
    fn check(input: &[u8]) {
        assert!(!input.windows(3).any(|w| w == b"bad"), "found it");
    }
    let input = b"lots of padding around the bad bytes and more padding".to_vec();
    let message = runner::execute(check, &input).unwrap_err();
    let small = runner::minimize(check, &input, &message, Duration::from_secs(5));
    assert_eq!(small, b"bad");
}
