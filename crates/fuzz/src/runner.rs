//! The stable-toolchain fuzz loop: replay the seed corpus, then mutate it until a time (or
//! run) budget is spent, catching each input's panic.
//!
//! There is no coverage feedback (that needs nightly's sanitizer coverage: use the
//! `cargo fuzz` targets for it); instead the mutator is biased by each target's dictionary
//! and the bytes that matter to it, and it keeps a pool of earlier mutants so that changes
//! stack. Everything random comes from one seeded generator, so `--seed` (with `--runs`)
//! reproduces a run input for input.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::gen;
use crate::Target;

/// Bytes the mutator writes into inputs.
const INTERESTING: &[u8] = b"%+/.?&=:[]@*\r\n\0~ #!'()\"\\-_{}0aAfF9\x7f\x80\xc3\xa9\xe2\xf0\xff";

/// How one run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time budget for the whole run (corpus replay included).
    pub seconds: f64,
    /// Stop after this many inputs (corpus included), if set.
    pub runs: Option<u64>,
    /// Folders of seed inputs (each file one input), replayed first.
    pub corpus: Vec<PathBuf>,
    /// Seed of the mutator.
    pub seed: u64,
    /// Where a failing input is written.
    pub crashes: PathBuf,
    /// Largest input the mutator makes.
    pub max_len: usize,
    /// One input running longer than this is a failure (a hang).
    pub timeout: Duration,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Inputs run, corpus included.
    pub execs: u64,
    /// Seed files replayed.
    pub corpus_files: usize,
    /// Time taken.
    pub elapsed: Duration,
    /// Size of the mutation pool at the end.
    pub pool: usize,
}

impl Stats {
    /// Inputs per second.
    pub fn rate(&self) -> f64 {
        self.execs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A failing input.
#[derive(Debug, Clone)]
pub struct Crash {
    /// The input as found.
    pub input: Vec<u8>,
    /// The panic's location and message.
    pub message: String,
    /// Where the input was written.
    pub saved: PathBuf,
    /// A smaller input failing at the same place, and where it was written.
    pub minimized: Option<(Vec<u8>, PathBuf)>,
}

/// The outcome of a run.
#[derive(Debug)]
pub enum Outcome {
    /// No property failed.
    Clean(Stats),
    /// An input failed.
    Crashed(Stats, Box<Crash>),
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `check` on `input`; the panic's location and message if it panics.
pub fn execute(check: fn(&[u8]), input: &[u8]) -> Result<(), String> {
    match panic::catch_unwind(AssertUnwindSafe(|| check(input))) {
        Ok(()) => Ok(()),
        Err(payload) => Err(LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| panic_text(&*payload))),
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Replaces the panic hook with one that records the panic for [`execute`] instead of
/// printing it; the previous hook is restored when the guard drops.
pub struct QuietPanics {
    previous: Option<PanicHook>,
}

type PanicHook = Box<dyn Fn(&panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

impl QuietPanics {
    /// Installs the recording hook.
    pub fn install() -> Self {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
            let text = format!("panicked at {location}: {}", panic_text(info.payload()));
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
        }));
        QuietPanics {
            previous: Some(previous),
        }
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        if let Some(previous) = self.previous.take() {
            panic::set_hook(previous);
        }
    }
}

/// A splitmix64 generator: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
}

/// Makes new inputs from old ones.
#[derive(Debug, Clone)]
pub struct Mutator {
    rng: Rng,
    dictionary: &'static [&'static str],
    max_len: usize,
}

impl Mutator {
    /// A mutator for a target's dictionary.
    pub fn new(seed: u64, dictionary: &'static [&'static str], max_len: usize) -> Self {
        Mutator {
            rng: Rng::new(seed),
            dictionary,
            max_len,
        }
    }

    /// The generator, for choices outside mutation.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A new input from nothing: structured (random bytes for `Unstructured`) or literal
    /// (dictionary tokens and interesting bytes).
    pub fn fresh(&mut self) -> Vec<u8> {
        let len = self.rng.below(self.max_len.min(256) + 1);
        if self.rng.one_in(2) {
            let mut out = vec![crate::STRUCTURED];
            out.extend((0..len).map(|_| self.rng.byte()));
            return out;
        }
        let mut out = Vec::new();
        while out.len() < len {
            self.insert_token(&mut out);
        }
        if out.first() == Some(&crate::STRUCTURED) {
            out.remove(0);
        }
        out
    }

    /// `base` with one to eight mutations stacked; `other` is the splice partner.
    pub fn mutate(&mut self, base: &[u8], other: &[u8]) -> Vec<u8> {
        let mut data = base.to_vec();
        let count = if self.rng.one_in(4) {
            1 + self.rng.below(8)
        } else {
            1 + self.rng.below(3)
        };
        for _ in 0..count {
            self.mutate_once(&mut data, other);
        }
        data.truncate(self.max_len);
        data
    }

    fn mutate_once(&mut self, data: &mut Vec<u8>, other: &[u8]) {
        let at = self.rng.below(data.len() + 1);
        let rng = &mut self.rng;
        match rng.below(16) {
            0 if at < data.len() => data[at] ^= 1 << rng.below(8),
            1 if at < data.len() => data[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 if at < data.len() => data[at] = rng.byte(),
            3 | 4 => self.insert_token_at(data, at),
            5 if at < data.len() => {
                let len = 1 + rng.below(8.min(data.len() - at));
                data.drain(at..at + len);
            }
            6 if at < data.len() => {
                let len = 1 + rng.below(16.min(data.len() - at));
                let copy = data[at..at + len].to_vec();
                let to = rng.below(data.len() + 1);
                data.splice(to..to, copy);
            }
            7 if !other.is_empty() => {
                let from = rng.below(other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            8 => {
                let bytes: Vec<u8> = (0..1 + rng.below(4)).map(|_| rng.byte()).collect();
                data.splice(at..at, bytes);
            }
            9 => data.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            10 if data.len() >= 2 => {
                let (last, other_at) = (data.len() - 1, rng.below(data.len()));
                data.swap(at.min(last), other_at);
            }
            11 if at < data.len() && data[at].is_ascii_alphabetic() => data[at] ^= 0x20,
            12 => self.insert_special(data, at),
            13 if data.first() == Some(&crate::STRUCTURED) => {
                data.remove(0);
            }
            13 => data.insert(0, crate::STRUCTURED),
            14 if at > 0 => data.truncate(at),
            15 if at < data.len() => data[at] = data[at].wrapping_add(1 + rng.below(3) as u8),
            _ => self.insert_token_at(data, at),
        }
    }

    fn insert_token(&mut self, data: &mut Vec<u8>) {
        let at = data.len();
        self.insert_token_at(data, at);
    }

    fn insert_token_at(&mut self, data: &mut Vec<u8>, at: usize) {
        if self.dictionary.is_empty() || self.rng.one_in(4) {
            data.insert(at, INTERESTING[self.rng.below(INTERESTING.len())]);
        } else {
            let token = self.dictionary[self.rng.below(self.dictionary.len())];
            data.splice(at..at, token.bytes());
        }
    }

    fn insert_special(&mut self, data: &mut Vec<u8>, at: usize) {
        let pool = match self.rng.below(3) {
            0 => gen::ESCAPES,
            1 => gen::MULTIBYTE,
            _ => gen::CONTROL,
        };
        let token = pool[self.rng.below(pool.len())];
        data.splice(at..at, token.bytes());
    }
}

/// The seed inputs in `dirs`, files in name order (missing folders are skipped).
pub fn load_corpus(dirs: &[PathBuf]) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut inputs = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        for file in files {
            let bytes = std::fs::read(&file)?;
            inputs.push((file, bytes));
        }
    }
    Ok(inputs)
}

/// FNV-1a, for naming saved inputs by their content.
pub fn content_hash(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Runs `target` under `options` (see the module docs).
pub fn run(target: &Target, options: &Options) -> std::io::Result<Outcome> {
    let corpus = load_corpus(&options.corpus)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(options.seconds.max(0.0));
    let watchdog = Watchdog::start(target.name, options.crashes.clone(), options.timeout);
    let quiet = QuietPanics::install();
    let mut stats = Stats {
        corpus_files: corpus.len(),
        ..Stats::default()
    };
    let mut fuzz = Fuzz::new(
        target,
        options,
        corpus.into_iter().map(|(_, b)| b).collect(),
    );
    let mut reported = start;
    let mut failed = None;
    while let Some(input) = fuzz.next_input(stats.execs) {
        let out_of_budget = options.runs.is_some_and(|runs| stats.execs >= runs)
            || (Instant::now() >= deadline && stats.execs >= fuzz.seeds as u64);
        if out_of_budget {
            break;
        }
        watchdog.begin(&input);
        let result = execute(target.check, &input);
        watchdog.end();
        stats.execs += 1;
        if let Err(message) = result {
            failed = Some((input, message));
            break;
        }
        fuzz.keep(input);
        if reported.elapsed() >= Duration::from_secs(10) {
            reported = Instant::now();
            eprintln!(
                "{}: #{} {:.0}s {:.0} execs/s, pool {}",
                target.name,
                stats.execs,
                start.elapsed().as_secs_f64(),
                stats.execs as f64 / start.elapsed().as_secs_f64(),
                fuzz.pool.len()
            );
        }
    }
    stats.elapsed = start.elapsed();
    stats.pool = fuzz.pool.len();
    let outcome = match failed {
        None => Outcome::Clean(stats),
        Some((input, message)) => {
            let crash = save_crash(target, options, input, message)?;
            Outcome::Crashed(stats, Box::new(crash))
        }
    };
    drop(quiet);
    Ok(outcome)
}

/// The corpus replay, then mutants from a pool of seeds and earlier mutants.
struct Fuzz {
    mutator: Mutator,
    pool: Vec<Vec<u8>>,
    seeds: usize,
}

impl Fuzz {
    const POOL: usize = 8192;

    fn new(target: &Target, options: &Options, seeds: Vec<Vec<u8>>) -> Self {
        Fuzz {
            mutator: Mutator::new(options.seed, target.dictionary, options.max_len),
            seeds: seeds.len(),
            pool: seeds,
        }
    }

    /// The `n`th input: seed `n` while there are seeds, then a mutant.
    fn next_input(&mut self, n: u64) -> Option<Vec<u8>> {
        if let Some(seed) = self
            .pool
            .get(n as usize)
            .filter(|_| (n as usize) < self.seeds)
        {
            return Some(seed.clone());
        }
        if self.pool.is_empty() || self.mutator.rng().one_in(16) {
            return Some(self.mutator.fresh());
        }
        let rng = self.mutator.rng();
        let base = if self.seeds > 0 && rng.one_in(2) {
            rng.below(self.seeds)
        } else {
            rng.below(self.pool.len())
        };
        let other = rng.below(self.pool.len());
        let (base, other) = (self.pool[base].clone(), self.pool[other].clone());
        Some(self.mutator.mutate(&base, &other))
    }

    /// Keeps one mutant in four for later mutation.
    fn keep(&mut self, input: Vec<u8>) {
        if self.pool.len() < self.seeds || !self.mutator.rng().one_in(4) {
            return;
        }
        if self.pool.len() < Self::POOL {
            self.pool.push(input);
        } else {
            let spare = Self::POOL - self.seeds;
            if spare > 0 {
                let at = self.seeds + self.mutator.rng().below(spare);
                self.pool[at] = input;
            }
        }
    }
}

/// Writes the failing input (and a minimized one) to the crashes folder.
fn save_crash(
    target: &Target,
    options: &Options,
    input: Vec<u8>,
    message: String,
) -> std::io::Result<Crash> {
    std::fs::create_dir_all(&options.crashes)?;
    let name = format!("{}-{}", target.name, content_hash(&input));
    let saved = options.crashes.join(&name);
    std::fs::write(&saved, &input)?;
    let small = minimize(target.check, &input, &message, Duration::from_secs(20));
    let minimized = if small.len() < input.len() {
        let path = options.crashes.join(format!("{name}.min"));
        std::fs::write(&path, &small)?;
        Some((small, path))
    } else {
        None
    };
    Ok(Crash {
        input,
        message,
        saved,
        minimized,
    })
}

/// The panic's location, `file:line`, to tell one bug from another (known when the
/// recording hook was installed).
fn location(message: &str) -> Option<&str> {
    message
        .strip_prefix("panicked at ")
        .and_then(|rest| rest.split_once(": "))
        .map(|(location, _)| location)
}

/// A smaller input that still fails at the same place: chunks removed, halving in size.
pub fn minimize(check: fn(&[u8]), input: &[u8], message: &str, budget: Duration) -> Vec<u8> {
    let _quiet = QuietPanics::install();
    let start = Instant::now();
    let want = location(message);
    let same = |candidate: &[u8]| {
        execute(check, candidate).is_err_and(|m| want.is_none() || location(&m) == want)
    };
    let mut best = input.to_vec();
    let mut chunk = best.len().div_ceil(2).max(1);
    loop {
        let mut at = 0;
        while at < best.len() && start.elapsed() < budget {
            let end = (at + chunk).min(best.len());
            let mut candidate = best[..at].to_vec();
            candidate.extend_from_slice(&best[end..]);
            if same(&candidate) {
                best = candidate;
            } else {
                at += chunk;
            }
        }
        if chunk == 1 || start.elapsed() >= budget {
            return best;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// Fails the run when one input takes longer than the timeout: a hang would otherwise
/// outlast any time budget. Writes the input first.
struct Watchdog {
    shared: Arc<WatchdogState>,
}

#[allow(clippy::disallowed_types)] // A synchronous CLI: no async path to block.
struct WatchdogState {
    /// Milliseconds since `epoch` when the current input started, or 0 between inputs.
    started: AtomicU64,
    epoch: Instant,
    input: std::sync::Mutex<Vec<u8>>,
}

impl Watchdog {
    fn start(name: &'static str, crashes: PathBuf, timeout: Duration) -> Self {
        let shared = Arc::new(WatchdogState {
            started: AtomicU64::new(0),
            epoch: Instant::now(),
            input: Default::default(),
        });
        let watched = Arc::downgrade(&shared);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let Some(state) = watched.upgrade() else {
                return;
            };
            let started = state.started.load(Ordering::Relaxed);
            let now = state.epoch.elapsed().as_millis() as u64;
            if started != 0 && now.saturating_sub(started) > timeout.as_millis() as u64 {
                let input = state.input.lock().map(|i| i.clone()).unwrap_or_default();
                timed_out(name, &crashes, &input, timeout);
            }
        });
        Watchdog { shared }
    }

    fn begin(&self, input: &[u8]) {
        if let Ok(mut current) = self.shared.input.lock() {
            current.clear();
            current.extend_from_slice(input);
        }
        let now = self.shared.epoch.elapsed().as_millis() as u64;
        self.shared.started.store(now.max(1), Ordering::Relaxed);
    }

    fn end(&self) {
        self.shared.started.store(0, Ordering::Relaxed);
    }
}

fn timed_out(name: &str, crashes: &Path, input: &[u8], timeout: Duration) -> ! {
    let path = crashes.join(format!("{name}-timeout-{}", content_hash(input)));
    let _ = std::fs::create_dir_all(crashes);
    let _ = std::fs::write(&path, input);
    eprintln!(
        "{name}: one input ran over {}s (a hang); saved to {}\nreproduce: cargo run -p pkcv-fuzz -- {name} --reproduce {}",
        timeout.as_secs_f64(),
        path.display(),
        path.display()
    );
    std::process::exit(1);
}
