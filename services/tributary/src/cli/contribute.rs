//! `tributary contribute`: streams an NDJSON or CSV file through the `Contribute` RPC with
//! [`StreamingContributor`] (batches in a window, resume after a broken connection), shows
//! progress, and prints a summary with every invalid record's line number.
//!
//! Invalid records never block the rest: a line that is not a record is reported without being
//! sent; a batch the server rejects (batches are atomic) is reported record by record from its
//! `BadRequest` violations (`records[3]...` names the record) and its valid records are sent
//! again as a new batch. An accrue/replace session with invalid records is rolled back unless
//! `--skip-invalid`, because committing a replace without them would delete them.
//!
//! Memory is bounded by the window of batches in flight and one chunk being read, whatever the
//! file's size: the file is read by a thread one chunk at a time. `--digest` on a file first
//! reads it once to reconcile its `(id, checksum)` set with the server's (range-based sync,
//! `Reconcile`: a few round trips and kilobytes when little changed), then sends only the
//! new/changed records in a second pass; that set is the one thing held in memory (about 100
//! bytes a record). On stdin, which cannot be read twice, `--digest` works chunk by chunk in one
//! pass instead (read a chunk, `Diff` its digests, send only the new/changed records).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tributary_client::pb::contribution::{self as pb, BatchAck, Outcome, SessionMode};
use tributary_client::status::code_name;
use tributary_client::{digest, reconcile, StreamError, StreamingContributor};

use super::connection::{with_token_hint, ServerArgs};
use super::input::{input_name, InputFormat, Item, RecordReader};
use super::{usage, EXIT_FAILED, EXIT_OK};

/// Invalid records listed in the summary; the rest are counted.
const MAX_LISTED_INVALID: usize = 1000;

/// Contribute an NDJSON or CSV file as a connector (connector token).
///
/// The token comes from --token, else TRIBUTARY_TOKEN. Before anything is sent, the server says
/// which connector the token acts for; if it is not --connector, the command stops (exit 2).
///
/// Modes: `stream` makes each batch visible as it is acknowledged; `accrue` and `replace` make
/// the whole file visible at once when it has been sent, and `replace` deletes the connector's
/// records that are not in the file.
///
/// Files: NDJSON (one object per line: id, name, entity, instance, checksum) or CSV (a header
/// row of id, name, checksum, entity.<path>, instance.<path>, with an optional :string, :number,
/// :integer, :boolean or :json type suffix; empty cells are left out). The format follows the
/// extension (.csv), or --format.
///
/// Exit status: 0 when every record was contributed; 1 when some were invalid (listed with their
/// line numbers) or the session failed; 2 for a usage error.
#[derive(Debug, clap::Args)]
pub struct ContributeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The connector contributing (its id); the token must belong to it.
    #[arg(long, env = "TRIBUTARY_CONNECTOR")]
    pub connector: String,
    /// How the records become visible and what happens to earlier ones.
    #[arg(long, value_enum)]
    pub mode: ModeArg,
    /// The file to contribute; `-` reads stdin.
    pub file: PathBuf,
    /// The file's format (default: from the extension; NDJSON for stdin).
    #[arg(long, value_enum)]
    pub format: Option<InputFormat>,
    /// Find out first which records are new or changed and send only those in full: a file is
    /// reconciled as a whole by range-based sync (a few round trips when little changed);
    /// stdin is diffed chunk by chunk with (id, checksum) digests.
    #[arg(long)]
    pub digest: bool,
    /// Records per batch (at most the server's limit, 10,000 by default).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Batches in flight before waiting for acknowledgements.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub window: u32,
    /// accrue/replace: commit the valid records even when some were invalid (default: roll back).
    #[arg(long)]
    pub skip_invalid: bool,
    /// replace: commit past the connector's removal guard, and even when no record was valid
    /// (which deletes every record of the connector).
    #[arg(long)]
    pub force: bool,
    /// How progress is shown on stderr: a bar on a terminal, plain lines otherwise.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressArg,
}

/// Session modes as the command line spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// Visible batch by batch; earlier records kept.
    Stream,
    /// Visible at the end, all at once; earlier records kept.
    Accrue,
    /// Visible at the end, all at once; earlier records not in the file are deleted.
    Replace,
}

impl ModeArg {
    fn proto(self) -> SessionMode {
        match self {
            ModeArg::Stream => SessionMode::Stream,
            ModeArg::Accrue => SessionMode::Accrue,
            ModeArg::Replace => SessionMode::Replace,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ModeArg::Stream => "stream",
            ModeArg::Accrue => "accrue",
            ModeArg::Replace => "replace",
        }
    }
}

/// Progress display choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// A bar when stderr is a terminal, plain lines otherwise.
    Auto,
    /// Always the bar.
    Bar,
    /// A line every second.
    Plain,
    /// Nothing until the summary.
    None,
}

/// Runs `tributary contribute`; the exit status says whether every record went in.
pub async fn run(args: ContributeArgs) -> anyhow::Result<ExitCode> {
    let token = args.server.token("connector", false)?;
    let format = args
        .format
        .unwrap_or_else(|| InputFormat::from_path(&args.file));
    // Opened (and a CSV header checked) before the session, so a bad file changes nothing.
    let reader = RecordReader::open(&args.file, format)?;
    let size = reader.size;
    let bytes_read = reader.bytes_read.clone();
    let chunks = spawn_reader(reader, args.batch_size as usize, args.digest);

    let channel = args.server.connect().await?;
    let acks: Arc<Mutex<VecDeque<BatchAck>>> = Arc::default();
    let queue = acks.clone();
    let stream = StreamingContributor::builder(channel, &token.value)
        .window(args.window as usize)
        .on_ack(move |ack| {
            if let Ok(mut q) = queue.lock() {
                q.push_back(ack.clone());
            }
        })
        .open(args.mode.proto())
        .await
        .map_err(|e| match e {
            StreamError::Status(s) => with_token_hint(s, &token, "connector"),
            other => stream_failure(other),
        })?;
    if !stream.connector().is_empty() && stream.connector() != args.connector {
        let (actual, entity_type) = (
            stream.connector().to_owned(),
            stream.entity_type().to_owned(),
        );
        // Nothing was sent; closing without commit discards the session just opened.
        let _ = stream.finish(false, false).await;
        return Err(usage(format!(
            "the token belongs to connector {actual} (entity type {entity_type}), not {}",
            args.connector
        )));
    }

    let mut stream = stream;
    let reconciled = if args.digest && args.file != std::path::Path::new("-") {
        Some(reconcile_file(&mut stream, &args.file, format).await?)
    } else {
        None
    };
    let mut progress = Progress::new(args.progress, size);
    let mut run = Contribution {
        stream,
        acks,
        inflight: BTreeMap::new(),
        tally: Tally::default(),
        reconciled,
    };
    let mut chunks = chunks;
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk.with_context(|| format!("reading {}", input_name(&args.file)))?;
        run.contribute(chunk, args.digest).await?;
        progress.update(run.tally.read, bytes_read.load(Ordering::Relaxed));
    }
    run.drain().await?;
    progress.finish(run.tally.read, bytes_read.load(Ordering::Relaxed));

    let Contribution {
        stream,
        mut tally,
        reconciled,
        ..
    } = run;
    let session_id = stream.session_id().to_owned();
    let entity_type = stream.entity_type().to_owned();
    let reconnects = stream.stats().reconnects;
    let staged = args.mode != ModeArg::Stream;
    let invalid = tally.invalid > 0;
    let empty_replace = args.mode == ModeArg::Replace && tally.valid == 0 && !args.force;
    let commit = !(staged && ((invalid && !args.skip_invalid) || empty_replace));

    let closed = stream.finish(commit, args.force).await;
    println!(
        "{} {} to connector {} ({}) in {} mode, session {}.",
        if commit { "Contributed" } else { "Sent" },
        input_name(&args.file),
        args.connector,
        entity_type,
        args.mode.name(),
        session_id
    );
    let closed = match closed {
        Ok(closed) => closed,
        Err(e) => {
            tally.print_invalid();
            let e = stream_failure(e);
            let refused = e
                .downcast_ref::<tonic::Status>()
                .is_some_and(|s| s.code() == tonic::Code::FailedPrecondition);
            return Err(if refused {
                e.context(format!(
                    "the commit was refused; session {session_id} stays open until it is superseded \
                     or expires; re-run with --force to commit past the guard"
                ))
            } else {
                e.context("closing the session")
            });
        }
    };
    let totals = closed.totals.unwrap_or_default();
    let (created, updated, unchanged, deleted, skipped) = match args.mode {
        // A stream's outcomes are final as acknowledged; they were counted on the way.
        ModeArg::Stream => (
            tally.created,
            tally.updated,
            tally.unchanged + tally.digest_unchanged,
            tally.deleted,
            tally.skipped,
        ),
        // Accrue stages nothing for unchanged digests; replace stages them as kept rows,
        // which the totals already count.
        ModeArg::Accrue => (
            totals.created,
            totals.updated,
            totals.unchanged + tally.digest_unchanged,
            totals.deleted,
            totals.skipped,
        ),
        ModeArg::Replace => (
            totals.created,
            totals.updated,
            totals.unchanged,
            totals.deleted,
            totals.skipped,
        ),
    };
    println!(
        "  read {} records: {} valid, {} invalid{}",
        tally.read,
        tally.valid,
        tally.invalid,
        match (&reconciled, args.digest) {
            (Some(r), _) => format!(
                "; {} sent in full after reconciling ({} round{}, {} server records not in the file)",
                tally.sent,
                r.rounds,
                if r.rounds == 1 { "" } else { "s" },
                r.absent
            ),
            (None, true) => format!("; {} sent in full after digests", tally.sent),
            (None, false) => String::new(),
        }
    );
    if commit {
        println!(
            "  created {created}, updated {updated}, unchanged {unchanged}, deleted {deleted}, \
             swept {}, skipped {skipped}",
            totals.swept
        );
    }
    if tally.already_applied > 0 {
        println!(
            "  {} records were in batches applied before a reconnect (counted once, outcomes not repeated)",
            tally.already_applied
        );
    }
    if reconnects > 0 {
        println!(
            "  reconnected after a broken connection: {reconnects} time{}; no batch was lost or \
             applied twice",
            if reconnects == 1 { "" } else { "s" }
        );
    }
    if !closed.import_result_id.is_empty() {
        println!("  import result: {}", closed.import_result_id);
    }
    tally.print_invalid();
    if !commit {
        if empty_replace {
            println!(
                "Rolled back: no valid record, and a replace commit would delete every record of \
                 the connector (pass --force to do that)."
            );
        } else {
            println!(
                "Rolled back: nothing of this file is visible because {} records were invalid \
                 (pass --skip-invalid to commit the valid ones).",
                tally.invalid
            );
        }
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    Ok(ExitCode::from(if invalid { EXIT_FAILED } else { EXIT_OK }))
}

/// A chunk of input, its records parsed (and digested with `--digest`) by the reader thread.
type Chunk = Vec<Parsed>;

/// One input record with its line and, for `--digest`, its checksum.
struct Parsed {
    line: u64,
    record: Result<pb::Record, String>,
    digest: Option<pb::Digest>,
}

/// Reads the input on a thread (file and stdin reads block) in chunks of `chunk` records;
/// the channel holds two chunks, so reading stays just ahead of sending.
fn spawn_reader(
    mut reader: RecordReader,
    chunk: usize,
    digests: bool,
) -> tokio::sync::mpsc::Receiver<Result<Chunk, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    std::thread::spawn(move || loop {
        let mut items = Vec::with_capacity(chunk);
        let mut end = false;
        while items.len() < chunk {
            match reader.next_item() {
                Ok(Some(Item { line, record })) => {
                    let digest = match (&record, digests) {
                        (Ok(r), true) => digestible(r),
                        _ => None,
                    };
                    items.push(Parsed {
                        line,
                        record,
                        digest,
                    });
                }
                Ok(None) => {
                    end = true;
                    break;
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
        if !items.is_empty() && tx.blocking_send(Ok(items)).is_err() {
            return;
        }
        if end {
            return;
        }
    });
    rx
}

/// The digest of a record that can be diffed: the server refuses digests whose id or checksum
/// is out of bounds, so such records are sent in full and get their violations there.
fn digestible(record: &pb::Record) -> Option<pb::Digest> {
    let d = digest::digest(record).ok()?;
    let id_chars = d.id.chars().count();
    let checksum_chars = d.checksum.chars().count();
    ((1..=64).contains(&id_chars) && (1..=128).contains(&checksum_chars)).then_some(d)
}

/// What reconciling a file found: the ids to send in full, and how the exchange went.
struct Reconciled {
    to_send: HashSet<String>,
    rounds: u32,
    absent: u64,
}

/// Reads the whole file once for its `(id, checksum)` set and reconciles it with the server's
/// in the stream; answers the ids to send in full. Records that cannot be digested are not in
/// the set: they are sent in full (and get their violations there).
async fn reconcile_file(
    stream: &mut StreamingContributor,
    path: &std::path::Path,
    format: InputFormat,
) -> anyhow::Result<Reconciled> {
    let mut reader = RecordReader::open(path, format)?;
    let set = tokio::task::spawn_blocking(move || -> std::io::Result<reconcile::ClientSet> {
        let mut pairs = Vec::new();
        while let Some(item) = reader.next_item()? {
            if let Some(d) = item.record.ok().as_ref().and_then(digestible) {
                pairs.push((d.id, d.checksum));
            }
        }
        Ok(reconcile::ClientSet::new(pairs))
    })
    .await
    .context("reading the file for its digests")?
    .with_context(|| format!("reading {}", input_name(path)))?;
    let outcome = stream
        .reconcile(&set, reconcile::CallLimits::default())
        .await
        .map_err(stream_failure)?;
    Ok(Reconciled {
        to_send: outcome.send.iter().map(|&i| set.id(i).to_owned()).collect(),
        rounds: outcome.rounds,
        absent: outcome.absent,
    })
}

/// A batch sent and not yet acknowledged: its records (to resend the valid ones if the batch is
/// rejected) and their lines.
struct Batch {
    lines: Vec<u64>,
    records: Vec<pb::Record>,
}

/// Counters and the invalid records seen so far.
#[derive(Default)]
struct Tally {
    read: u64,
    valid: u64,
    invalid: u64,
    sent: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    deleted: u64,
    skipped: u64,
    digest_unchanged: u64,
    already_applied: u64,
    /// (line, why), the first MAX_LISTED_INVALID.
    invalid_listed: Vec<(u64, String)>,
}

impl Tally {
    fn invalid(&mut self, line: u64, why: String) {
        self.invalid += 1;
        if self.invalid_listed.len() < MAX_LISTED_INVALID {
            self.invalid_listed.push((line, why));
        }
    }

    fn print_invalid(&mut self) {
        if self.invalid_listed.is_empty() {
            return;
        }
        self.invalid_listed.sort_by_key(|(line, _)| *line);
        println!("Invalid records (not contributed):");
        for (line, why) in &self.invalid_listed {
            println!("  line {line}: {why}");
        }
        let unlisted = self.invalid - self.invalid_listed.len() as u64;
        if unlisted > 0 {
            println!("  ... and {unlisted} more");
        }
    }
}

/// A session being fed.
struct Contribution {
    stream: StreamingContributor,
    /// Acks the stream's callback queued, handled between calls.
    acks: Arc<Mutex<VecDeque<BatchAck>>>,
    inflight: BTreeMap<u64, Batch>,
    tally: Tally,
    /// With `--digest` on a file: what reconciling it found (else chunks are diffed).
    reconciled: Option<Reconciled>,
}

impl Contribution {
    /// Sends one chunk (after `Diff` with digests), then handles the acks that came back.
    async fn contribute(&mut self, chunk: Chunk, digests: bool) -> anyhow::Result<()> {
        let mut send = Vec::with_capacity(chunk.len());
        let mut to_diff = Vec::new();
        for parsed in chunk {
            self.tally.read += 1;
            match parsed.record {
                Err(why) => self.tally.invalid(parsed.line, why),
                Ok(record) => match (parsed.digest, &self.reconciled) {
                    (Some(_), Some(r)) if !r.to_send.contains(&record.id) => {
                        // Held unchanged by the server (kept, in a replace session).
                        self.tally.valid += 1;
                        self.tally.digest_unchanged += 1;
                    }
                    (Some(_), Some(_)) => send.push((parsed.line, record)),
                    (Some(d), None) if digests => to_diff.push((parsed.line, record, d)),
                    _ => send.push((parsed.line, record)),
                },
            }
        }
        if !to_diff.is_empty() {
            let sent = to_diff.iter().map(|(_, _, d)| d.clone()).collect();
            let needed: HashSet<String> = self
                .stream
                .diff(sent)
                .await
                .map_err(stream_failure)?
                .into_iter()
                .collect();
            for (line, record, _) in to_diff {
                if needed.contains(&record.id) {
                    send.push((line, record));
                } else {
                    // Counted as unchanged from the diff's ack; valid as the server knows it.
                    self.tally.valid += 1;
                }
            }
        }
        if !send.is_empty() {
            self.tally.sent += send.len() as u64;
            let (lines, records) = send.into_iter().unzip();
            self.submit(Batch { lines, records }).await?;
        }
        self.handle_acks().await
    }

    /// Sends a batch and remembers it until its ack.
    async fn submit(&mut self, batch: Batch) -> anyhow::Result<()> {
        let seq = self
            .stream
            .upsert(batch.records.clone())
            .await
            .map_err(stream_failure)?;
        self.inflight.insert(seq, batch);
        Ok(())
    }

    /// Waits for every batch, resending the valid records of rejected ones until none is left.
    async fn drain(&mut self) -> anyhow::Result<()> {
        loop {
            self.stream.flush().await.map_err(stream_failure)?;
            self.handle_acks().await?;
            if self.inflight.is_empty() {
                return Ok(());
            }
        }
    }

    /// Counts outcomes of the queued acks; splits rejected batches into invalid records
    /// (reported) and valid ones (sent again).
    async fn handle_acks(&mut self) -> anyhow::Result<()> {
        loop {
            let next = self.acks.lock().ok().and_then(|mut q| q.pop_front());
            let Some(ack) = next else {
                return Ok(());
            };
            for d in &ack.digests {
                if d.state() == pb::DigestState::Unchanged {
                    self.tally.digest_unchanged += 1;
                }
            }
            let Some(batch) = self.inflight.remove(&ack.batch_seq) else {
                continue; // a digest batch: nothing to resend
            };
            if ack.already_applied {
                self.tally.valid += batch.records.len() as u64;
                self.tally.already_applied += batch.records.len() as u64;
                continue;
            }
            let Some(error) = ack.error else {
                self.tally.valid += batch.records.len() as u64;
                for o in &ack.outcomes {
                    match o.outcome() {
                        Outcome::Created => self.tally.created += 1,
                        Outcome::Updated => self.tally.updated += 1,
                        Outcome::Unchanged => self.tally.unchanged += 1,
                        Outcome::Deleted => self.tally.deleted += 1,
                        Outcome::Skipped => self.tally.skipped += 1,
                        Outcome::NotFound | Outcome::Unspecified => {}
                    }
                }
                continue;
            };
            let mut bad: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for v in &error.violations {
                if let Some((index, rest)) = record_index(&v.field) {
                    if index < batch.records.len() {
                        let why = if rest.is_empty() {
                            v.description.clone()
                        } else {
                            format!("{rest}: {}", v.description)
                        };
                        bad.entry(index).or_default().push(why);
                    }
                }
            }
            if bad.is_empty() {
                // Not attributable to a record (e.g. a batch too large): all of it failed.
                let code = tonic::Code::from(error.code);
                for line in batch.lines {
                    self.tally
                        .invalid(line, format!("{}: {}", code_name(code), error.message));
                }
                continue;
            }
            let mut rest = Batch {
                lines: Vec::new(),
                records: Vec::new(),
            };
            for (index, (line, record)) in batch.lines.into_iter().zip(batch.records).enumerate() {
                match bad.remove(&index) {
                    Some(whys) => self.tally.invalid(line, whys.join("; ")),
                    None => {
                        rest.lines.push(line);
                        rest.records.push(record);
                    }
                }
            }
            if !rest.records.is_empty() {
                self.submit(rest).await?;
            }
        }
    }
}

/// `records[3].entity.population (id "FR")` → `(3, "entity.population (id \"FR\")")`.
fn record_index(field: &str) -> Option<(usize, &str)> {
    let rest = field.strip_prefix("records[")?;
    let (index, rest) = rest.split_once(']')?;
    let index = index.parse().ok()?;
    Some((index, rest.strip_prefix('.').unwrap_or(rest).trim_start()))
}

/// A [`StreamError`] as an error whose root is the gRPC status, when there is one.
fn stream_failure(e: StreamError) -> anyhow::Error {
    match e {
        StreamError::Status(status) => anyhow::Error::new(status),
        StreamError::GaveUp { attempts, last } => anyhow::Error::new(last).context(format!(
            "the connection kept breaking; gave up after {attempts} reconnect attempts (the session stays open until it expires)"
        )),
        StreamError::Rejected { batch_seq, error } => {
            let mut message = format!("batch {batch_seq} was rejected: {}", error.message);
            for v in error.violations {
                message.push_str(&format!("\n  {}: {}", v.field, v.description));
            }
            anyhow::anyhow!(message)
        }
        StreamError::Protocol(m) => anyhow::anyhow!("protocol error: {m}"),
    }
}

/// Progress on stderr: an indicatif bar (records, rate, ETA from the bytes read when the size
/// is known) on a terminal, a plain line every second otherwise.
enum Progress {
    Bar(ProgressBar, Instant),
    Plain {
        started: Instant,
        last: Instant,
        size: Option<u64>,
    },
    Off,
}

impl Progress {
    fn new(choice: ProgressArg, size: Option<u64>) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        match choice {
            ProgressArg::None => Progress::Off,
            ProgressArg::Plain => Progress::plain(size),
            ProgressArg::Auto if !terminal => Progress::plain(size),
            ProgressArg::Auto | ProgressArg::Bar => {
                let bar = match size {
                    Some(size) => {
                        ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr())
                            .with_style(
                                ProgressStyle::with_template(
                                    "{elapsed_precise} [{bar:30}] {percent:>3}% {msg} ETA {eta}",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                            )
                    }
                    None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
                        .with_style(
                            ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        ),
                };
                bar.enable_steady_tick(Duration::from_millis(200));
                Progress::Bar(bar, Instant::now())
            }
        }
    }

    fn plain(size: Option<u64>) -> Progress {
        let now = Instant::now();
        Progress::Plain {
            started: now,
            last: now,
            size,
        }
    }

    fn update(&mut self, records: u64, bytes: u64) {
        match self {
            Progress::Bar(bar, started) => {
                bar.set_position(bytes);
                bar.set_message(rate(records, *started));
            }
            Progress::Plain {
                started,
                last,
                size,
            } => {
                if last.elapsed() >= Duration::from_secs(1) {
                    *last = Instant::now();
                    eprintln!("{}", plain_line(records, bytes, *size, *started));
                }
            }
            Progress::Off => {}
        }
    }

    fn finish(&mut self, records: u64, bytes: u64) {
        match self {
            Progress::Bar(bar, started) => {
                bar.set_position(bytes);
                bar.finish_with_message(rate(records, *started));
            }
            Progress::Plain { started, size, .. } => {
                eprintln!("{}", plain_line(records, bytes, *size, *started));
            }
            Progress::Off => {}
        }
    }
}

fn per_second(records: u64, started: Instant) -> f64 {
    let secs = started.elapsed().as_secs_f64();
    if secs > 0.0 {
        records as f64 / secs
    } else {
        0.0
    }
}

fn rate(records: u64, started: Instant) -> String {
    format!("{records} records ({:.0}/s)", per_second(records, started))
}

fn plain_line(records: u64, bytes: u64, size: Option<u64>, started: Instant) -> String {
    let share = match size {
        Some(size) if size > 0 => {
            format!(", {:.0}% of the input", bytes as f64 * 100.0 / size as f64)
        }
        _ => String::new(),
    };
    format!(
        "progress: {records} records read{share} ({:.0} records/s)",
        per_second(records, started)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_name_the_record_of_the_batch() {
        assert_eq!(
            record_index("records[3].entity.population (id \"FR\")"),
            Some((3, "entity.population (id \"FR\")"))
        );
        assert_eq!(
            record_index("records[0] (id \"A\")"),
            Some((0, "(id \"A\")"))
        );
        assert_eq!(record_index("session_id"), None);
    }
}
