//! Output renderers for `keelson run`: a live TTY view (one spinner per running job), plain
//! interleaved lines for CI and pipes, and NDJSON for tools.
//!
//! Every string in an [`Event`] has already been secret-masked by the engine; this module only
//! formats. Rendering never blocks the engine: it drains an unbounded channel, writing each
//! batch of available events through one buffered, locked stdout and flushing once per batch.
//! The pure formatting pieces ([`format_plain_event`], [`format_summary_table`],
//! [`format_duration`]) need no terminal and are tested directly.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufWriter, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use keelson_core::Outcome;
use keelson_engine::events::{CacheStatus, Event, Stream};
use owo_colors::{AnsiColors, OwoColorize, Style};
use tokio::sync::mpsc::UnboundedReceiver;

/// At most this many events are written between two flushes, so a firehose of log lines still
/// reaches the reader promptly.
const MAX_BATCH: usize = 512;
/// Redraw rate of the live view (draws per second).
const LIVE_HZ: u8 = 12;
/// How often the live view advances spinners and elapsed times.
const LIVE_TICK: Duration = Duration::from_millis(100);
/// Log lines kept per job, printed when the job fails in the live view.
const TAIL_LINES: usize = 20;
/// The job prefix column never grows past this; longer job ids overflow it.
const PREFIX_MAX: usize = 24;
/// Prefix column width before `RunStarted` told us the job ids.
const PREFIX_DEFAULT: usize = 12;

/// How `keelson run` shows its progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Spinners per running job on a terminal.
    Live,
    /// Interleaved, prefixed lines (CI, pipes, `--plain`).
    Plain,
    /// One compact JSON object per event and line (NDJSON).
    Json,
}

/// How to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    pub mode: Mode,
    /// Use ANSI colours (ignored in [`Mode::Json`]).
    pub color: bool,
}

/// What a run came to, as seen through its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: Option<String>,
    /// `None` when the channel closed before `RunFinished`.
    pub result: Option<Outcome>,
    /// Finished jobs, in plan order.
    pub jobs: Vec<JobSummary>,
    /// The run's duration (from `RunFinished`, or from event timestamps when it never came).
    pub duration_ms: u64,
}

/// One finished job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSummary {
    pub job: String,
    pub result: Outcome,
    pub duration_ms: u64,
    pub cache: CacheStatus,
    pub reused: bool,
    pub reason: Option<String>,
}

/// Consumes events until the channel closes, writing to stdout. Returns the run's summary.
///
/// [`Mode::Live`] falls back to [`Mode::Plain`] when stdout is not a terminal. A closed stdout
/// (broken pipe) silently stops the output, and any other write error is returned once the
/// channel has closed. Either way every event is consumed, so the engine never notices.
pub async fn render(
    mut events: UnboundedReceiver<Event>,
    options: RenderOptions,
) -> io::Result<RunSummary> {
    if options.mode == Mode::Live {
        let target = ProgressDrawTarget::stdout_with_hz(LIVE_HZ);
        if !target.is_hidden() {
            return render_live(events, options.color, target).await;
        }
    }
    let mut renderer = TextRenderer::new(options);
    while let Some(first) = events.recv().await {
        // The lock is taken per batch and never held across an await.
        renderer.batch(first, &mut events, io::stdout().lock());
    }
    renderer.finish(io::stdout().lock());
    renderer.into_result()
}

/// Like [`render`] but writes to `out`: [`Mode::Json`] as NDJSON, [`Mode::Plain`] and
/// [`Mode::Live`] both as plain lines (a live view needs a terminal).
#[cfg(test)]
pub async fn render_to<W: Write + Send>(
    mut events: UnboundedReceiver<Event>,
    options: RenderOptions,
    mut out: W,
) -> io::Result<RunSummary> {
    let mut renderer = TextRenderer::new(options);
    while let Some(first) = events.recv().await {
        renderer.batch(first, &mut events, &mut out);
    }
    renderer.finish(&mut out);
    renderer.into_result()
}

// ---------------------------------------------------------------------------------------------
// Summary bookkeeping

/// Builds a [`RunSummary`] from events; keeps the plan order for sorting and colours.
#[derive(Debug, Default)]
struct Recorder {
    summary: RunSummary,
    /// Job ids in plan order, from `RunStarted`.
    plan: Vec<String>,
    started_at: Option<u64>,
    seen_any: bool,
    finished: bool,
}

impl Recorder {
    fn record(&mut self, event: &Event) {
        self.seen_any = true;
        match event {
            Event::RunStarted {
                run_id,
                jobs,
                at_ms,
                ..
            } => {
                self.summary.run_id = Some(run_id.clone());
                self.plan = jobs.clone();
                self.started_at = Some(*at_ms);
            }
            Event::JobFinished {
                job,
                result,
                reason,
                duration_ms,
                cache,
                reused,
                ..
            } => {
                let entry = JobSummary {
                    job: job.clone(),
                    result: *result,
                    duration_ms: *duration_ms,
                    cache: cache.clone(),
                    reused: *reused,
                    reason: reason.clone(),
                };
                if let Some(existing) = self.summary.jobs.iter_mut().find(|j| j.job == *job) {
                    *existing = entry;
                } else {
                    let rank = self.rank(job);
                    let at = self
                        .summary
                        .jobs
                        .iter()
                        .position(|j| self.rank(&j.job) > rank)
                        .unwrap_or(self.summary.jobs.len());
                    self.summary.jobs.insert(at, entry);
                }
            }
            Event::RunFinished {
                run_id,
                result,
                duration_ms,
                ..
            } => {
                self.summary.run_id = Some(run_id.clone());
                self.summary.result = Some(*result);
                self.summary.duration_ms = *duration_ms;
                self.finished = true;
            }
            _ => {}
        }
        if !self.finished
            && let Some(start) = self.started_at
        {
            self.summary.duration_ms = at_ms(event).saturating_sub(start);
        }
    }

    /// Position in the plan; jobs not in it sort last, in finishing order.
    fn rank(&self, job: &str) -> usize {
        self.plan
            .iter()
            .position(|j| j == job)
            .unwrap_or(usize::MAX)
    }

    /// A stable colour per job: by plan position, or by a hash of the id outside the plan.
    fn job_style(&self, job: &str) -> Style {
        const PALETTE: [AnsiColors; 6] = [
            AnsiColors::Cyan,
            AnsiColors::Magenta,
            AnsiColors::Blue,
            AnsiColors::BrightCyan,
            AnsiColors::BrightMagenta,
            AnsiColors::BrightBlue,
        ];
        let index = match self.plan.iter().position(|j| j == job) {
            Some(i) => i,
            None => job
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                })
                .try_into()
                .unwrap_or(0),
        };
        Style::new().color(PALETTE[index % PALETTE.len()])
    }
}

fn at_ms(event: &Event) -> u64 {
    match event {
        Event::RunStarted { at_ms, .. }
        | Event::JobStarted { at_ms, .. }
        | Event::StepStarted { at_ms, .. }
        | Event::Log { at_ms, .. }
        | Event::StepRecord { at_ms, .. }
        | Event::StepFinished { at_ms, .. }
        | Event::JobFinished { at_ms, .. }
        | Event::RunFinished { at_ms, .. } => *at_ms,
    }
}

// ---------------------------------------------------------------------------------------------
// Pure formatting

pub use keelson_core::format_duration;

/// Coarser elapsed time for spinners (`4s`, `2m05s`), so the column doesn't flicker.
fn format_elapsed(ms: u64) -> String {
    if ms < 60_000 {
        format!("{}s", ms / 1000)
    } else {
        format_duration(ms)
    }
}

fn paint(text: &str, color: bool, style: Style) -> String {
    if color {
        text.style(style).to_string()
    } else {
        text.to_owned()
    }
}

fn outcome_style(outcome: Outcome) -> Style {
    match outcome {
        Outcome::Success => Style::new().green(),
        Outcome::Failure => Style::new().red(),
        Outcome::Cancelled | Outcome::Skipped => Style::new().yellow(),
    }
}

fn outcome_symbol(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "✓",
        Outcome::Failure => "✗",
        Outcome::Cancelled | Outcome::Skipped => "⊘",
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn width_of(text: &str) -> usize {
    text.chars().count()
}

/// The cache column / note: `hit`, `partial (key)`, `miss`, `reused` or `-`.
fn cache_label(cache: &CacheStatus, reused: bool) -> String {
    if reused {
        return "reused".to_owned();
    }
    match cache {
        CacheStatus::None => "-".to_owned(),
        CacheStatus::Hit(_) => "hit".to_owned(),
        CacheStatus::Partial(key) => format!("partial ({key})"),
        CacheStatus::Miss => "miss".to_owned(),
    }
}

/// Notes for a finished job line: `cache hit`, `reused`, … (empty when there is nothing to say).
fn job_notes(cache: &CacheStatus, reused: bool) -> Vec<String> {
    let mut notes = Vec::new();
    match cache {
        CacheStatus::None => {}
        CacheStatus::Hit(_) => notes.push("cache hit".to_owned()),
        CacheStatus::Partial(key) => notes.push(format!("cache partial: {key}")),
        CacheStatus::Miss => notes.push("cache miss".to_owned()),
    }
    if reused {
        notes.push("reused".to_owned());
    }
    notes
}

/// Makes a log line safe to print: keeps only what follows the last carriage return (progress
/// bars), drops escape sequences and control characters except tabs. Colour (SGR) sequences
/// survive when `keep_sgr`, followed by a reset so they can't bleed into the next line.
fn sanitize(line: &str, keep_sgr: bool) -> String {
    let line = line.trim_end_matches(['\r', '\n']);
    let line = line.rsplit('\r').find(|s| !s.is_empty()).unwrap_or("");
    let mut out = String::with_capacity(line.len());
    let mut kept_sgr = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            match chars.next() {
                Some('[') => {
                    let mut seq = String::from("\x1b[");
                    let mut finished_with = None;
                    for c in chars.by_ref() {
                        seq.push(c);
                        if ('\x40'..='\x7e').contains(&c) {
                            finished_with = Some(c);
                            break;
                        }
                    }
                    if keep_sgr && finished_with == Some('m') {
                        out.push_str(&seq);
                        kept_sgr = true;
                    }
                }
                // OSC, DCS, SOS, PM, APC: skip to BEL or ST (ESC \).
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    if kept_sgr {
        out.push_str("\x1b[0m");
    }
    out
}

/// State carried between [`format_plain_event`] calls: the prefix width, the plan (for stable
/// colours) and the summary built so far (printed at `RunFinished`).
#[derive(Debug, Default)]
pub struct PlainState {
    recorder: Recorder,
    width: Option<usize>,
}

impl PlainState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The summary of what has been formatted so far.
    pub fn summary(&self) -> &RunSummary {
        &self.recorder.summary
    }

    pub fn into_summary(self) -> RunSummary {
        self.recorder.summary
    }

    fn prefix(&self, job: &str, color: bool) -> String {
        let width = self.width.unwrap_or(PREFIX_DEFAULT);
        let text = format!("[{job:<width$}]");
        paint(&text, color, self.recorder.job_style(job))
    }
}

/// Formats one event for plain output: one or more lines without a trailing newline, or `None`
/// when the event shows nothing. `RunFinished` yields the summary table and a `keelson logs`
/// hint.
pub fn format_plain_event(event: &Event, color: bool, state: &mut PlainState) -> Option<String> {
    state.recorder.record(event);
    let dim = Style::new().dimmed();
    match event {
        Event::RunStarted {
            run_id,
            number,
            jobs,
            ..
        } => {
            let widest = jobs.iter().map(|j| width_of(j)).max().unwrap_or(0);
            state.width = Some(widest.min(PREFIX_MAX));
            let head = format!("run {run_id} (#{number})");
            Some(format!(
                "{}: {}",
                paint(&head, color, Style::new().bold()),
                plural(jobs.len(), "job", "jobs")
            ))
        }
        Event::JobStarted { job, .. } => Some(format!(
            "{} {}",
            state.prefix(job, color),
            paint("job started", color, dim)
        )),
        Event::StepStarted {
            job, name, attempt, ..
        } => {
            let mut text = format!("▶ {name}");
            if *attempt > 1 {
                text.push_str(&format!(" (attempt {attempt})"));
            }
            Some(format!(
                "{} {}",
                state.prefix(job, color),
                paint(&text, color, Style::new().bold())
            ))
        }
        Event::Log {
            job, stream, line, ..
        } => {
            let line = sanitize(line, color);
            let prefix = state.prefix(job, color);
            Some(match stream {
                Stream::Stdout | Stream::Stderr => format!("{prefix} {line}"),
                Stream::System => format!(
                    "{prefix} {}",
                    paint(&format!("» {line}"), color, Style::new().cyan())
                ),
            })
        }
        Event::StepFinished {
            job,
            name,
            result,
            exit_code,
            reason,
            duration_ms,
            ..
        } => {
            let text = match result {
                Outcome::Success => format!("✓ {name} ({})", format_duration(*duration_ms)),
                Outcome::Failure => {
                    let detail = match (exit_code, reason) {
                        (Some(code), Some(reason)) => format!("exit {code} ({reason})"),
                        (Some(code), None) => format!("exit {code}"),
                        (None, Some(reason)) => reason.clone(),
                        (None, None) => "failed".to_owned(),
                    };
                    format!("✗ {name} ({}) {detail}", format_duration(*duration_ms))
                }
                Outcome::Skipped | Outcome::Cancelled => {
                    let mut text = format!("⊘ {name} {result}");
                    if let Some(reason) = reason {
                        text.push_str(&format!(" ({reason})"));
                    }
                    text
                }
            };
            Some(format!(
                "{} {}",
                state.prefix(job, color),
                paint(&text, color, outcome_style(*result))
            ))
        }
        Event::JobFinished {
            job,
            result,
            reason,
            duration_ms,
            cache,
            reused,
            ..
        } => {
            let mut head = format!("{} job {result}", outcome_symbol(*result));
            if *result != Outcome::Skipped {
                head.push_str(&format!(" in {}", format_duration(*duration_ms)));
            }
            let mut text = paint(&head, color, outcome_style(*result).bold());
            if let Some(reason) = reason {
                text.push_str(&format!(" ({reason})"));
            }
            let notes = job_notes(cache, *reused);
            if !notes.is_empty() {
                text.push_str(&format!(
                    " {}",
                    paint(&format!("[{}]", notes.join(", ")), color, dim)
                ));
            }
            Some(format!("{} {text}", state.prefix(job, color)))
        }
        // Structured records are for machines (NDJSON, the agent); the step logged its work.
        Event::StepRecord { .. } => None,
        Event::RunFinished { run_id, .. } => Some(format!(
            "\n{}\n{}",
            format_summary_table(state.summary(), color),
            logs_hint(run_id, color)
        )),
    }
}

fn logs_hint(run_id: &str, color: bool) -> String {
    paint(
        &format!("full logs: keelson logs {run_id}"),
        color,
        Style::new().dimmed(),
    )
}

/// The end-of-run table (job, result, duration, cache, and a note column when a job has a
/// reason) and the final `run <id>: <result> in <duration> — …` line. No trailing newline.
pub fn format_summary_table(summary: &RunSummary, color: bool) -> String {
    struct Cell {
        text: String,
        style: Option<Style>,
    }
    let cell = |text: String, style: Option<Style>| Cell { text, style };
    let header_style = Some(Style::new().bold());
    let with_notes = summary.jobs.iter().any(|j| j.reason.is_some());

    let mut rows: Vec<Vec<Cell>> = Vec::with_capacity(summary.jobs.len() + 1);
    let mut header = vec![
        cell("job".into(), header_style),
        cell("result".into(), header_style),
        cell("duration".into(), header_style),
        cell("cache".into(), header_style),
    ];
    if with_notes {
        header.push(cell("note".into(), header_style));
    }
    rows.push(header);
    for job in &summary.jobs {
        let duration = if job.result == Outcome::Skipped {
            "-".to_owned()
        } else {
            format_duration(job.duration_ms)
        };
        let mut row = vec![
            cell(job.job.clone(), None),
            cell(job.result.to_string(), Some(outcome_style(job.result))),
            cell(duration, None),
            cell(cache_label(&job.cache, job.reused), None),
        ];
        if with_notes {
            row.push(cell(job.reason.clone().unwrap_or_default(), None));
        }
        rows.push(row);
    }

    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| width_of(&r[c].text)).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            match cell.style {
                Some(style) => line.push_str(&paint(&cell.text, color, style)),
                None => line.push_str(&cell.text),
            }
            if c + 1 < columns {
                line.push_str(&" ".repeat(widths[c] - width_of(&cell.text) + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }

    let count = |o: Outcome| summary.jobs.iter().filter(|j| j.result == o).count();
    let mut counts = format!(
        "{} ok, {} failed, {} skipped",
        count(Outcome::Success),
        count(Outcome::Failure),
        count(Outcome::Skipped)
    );
    let cancelled = count(Outcome::Cancelled);
    if cancelled > 0 {
        counts.push_str(&format!(", {cancelled} cancelled"));
    }
    let id = summary.run_id.as_deref().unwrap_or("?");
    let duration = format_duration(summary.duration_ms);
    let verdict = match summary.result {
        Some(result) => format!(
            "{} in {duration}",
            paint(result.as_str(), color, outcome_style(result).bold())
        ),
        None => format!(
            "{} after {duration}",
            paint("incomplete", color, Style::new().yellow().bold())
        ),
    };
    out.push_str(&format!(
        "run {id}: {verdict} — {} ({counts})",
        plural(summary.jobs.len(), "job", "jobs")
    ));
    out
}

// ---------------------------------------------------------------------------------------------
// Plain and JSON output

/// Writes plain lines or NDJSON. Write errors stop the output but never the consumption of
/// events.
struct TextRenderer {
    json: bool,
    color: bool,
    state: PlainState,
    /// Output stopped (broken pipe or error).
    closed: bool,
    error: Option<io::Error>,
}

impl TextRenderer {
    fn new(options: RenderOptions) -> Self {
        let json = options.mode == Mode::Json;
        Self {
            json,
            color: options.color && !json,
            state: PlainState::new(),
            closed: false,
            error: None,
        }
    }

    /// Writes `first` and whatever else is already queued (up to [`MAX_BATCH`]), then flushes.
    fn batch<W: Write>(&mut self, first: Event, events: &mut UnboundedReceiver<Event>, out: W) {
        let mut out = BufWriter::new(out);
        self.event(&first, &mut out);
        for _ in 1..MAX_BATCH {
            match events.try_recv() {
                Ok(event) => self.event(&event, &mut out),
                Err(_) => break,
            }
        }
        self.flush(&mut out);
    }

    fn event(&mut self, event: &Event, out: &mut impl Write) {
        let text = if self.json {
            self.state.recorder.record(event);
            if self.closed {
                return;
            }
            match serde_json::to_string(event) {
                Ok(text) => Some(text),
                Err(err) => {
                    self.fail(io::Error::other(err));
                    None
                }
            }
        } else {
            format_plain_event(event, self.color, &mut self.state)
        };
        if let Some(text) = text {
            self.write_line(&text, out);
        }
    }

    /// Prints the summary if the channel closed before `RunFinished` (plain mode only).
    fn finish<W: Write>(&mut self, out: W) {
        if self.json || !self.state.recorder.seen_any || self.state.recorder.finished {
            return;
        }
        let mut out = BufWriter::new(out);
        let mut text = format!(
            "\n{}",
            format_summary_table(self.state.summary(), self.color)
        );
        if let Some(id) = &self.state.summary().run_id {
            text.push('\n');
            text.push_str(&logs_hint(id, self.color));
        }
        self.write_line(&text, &mut out);
        self.flush(&mut out);
    }

    fn write_line(&mut self, text: &str, out: &mut impl Write) {
        if self.closed {
            return;
        }
        if let Err(err) = out
            .write_all(text.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
        {
            self.fail(err);
        }
    }

    fn flush(&mut self, out: &mut impl Write) {
        if !self.closed
            && let Err(err) = out.flush()
        {
            self.fail(err);
        }
    }

    fn fail(&mut self, err: io::Error) {
        self.closed = true;
        if err.kind() != io::ErrorKind::BrokenPipe && self.error.is_none() {
            self.error = Some(err);
        }
    }

    fn into_result(self) -> io::Result<RunSummary> {
        match self.error {
            Some(err) => Err(err),
            None => Ok(self.state.into_summary()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Live (TTY) output

/// A job in the live view.
#[derive(Default)]
struct LiveJob {
    bar: Option<ProgressBar>,
    /// The last [`TAIL_LINES`] log lines, shown if the job fails.
    tail: VecDeque<String>,
    /// The running step's name.
    step: Option<String>,
    /// The last failed step and why, for the job's failure line.
    failed_step: Option<String>,
    finished: bool,
}

struct Live {
    multi: MultiProgress,
    style: ProgressStyle,
    color: bool,
    recorder: Recorder,
    jobs: HashMap<String, LiveJob>,
    width: usize,
    error: Option<io::Error>,
}

async fn render_live(
    mut events: UnboundedReceiver<Event>,
    color: bool,
    target: ProgressDrawTarget,
) -> io::Result<RunSummary> {
    let mut live = Live::new(target, color);
    let mut tick = tokio::time::interval(LIVE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { break };
                live.event(&event);
                for _ in 1..MAX_BATCH {
                    match events.try_recv() {
                        Ok(event) => live.event(&event),
                        Err(_) => break,
                    }
                }
            }
            _ = tick.tick() => live.tick(),
        }
    }
    live.finish()
}

impl Live {
    fn new(target: ProgressDrawTarget, color: bool) -> Self {
        let template = if color {
            "{spinner:.cyan} {prefix} {elapsed_short:>6.dim} {wide_msg}"
        } else {
            "{spinner} {prefix} {elapsed_short:>6} {wide_msg}"
        };
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", " "])
            .with_key(
                "elapsed_short",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let ms = u64::try_from(state.elapsed().as_millis()).unwrap_or(u64::MAX);
                    let _ = w.write_str(&format_elapsed(ms));
                },
            );
        Self {
            multi: MultiProgress::with_draw_target(target),
            style,
            color,
            recorder: Recorder::default(),
            jobs: HashMap::new(),
            width: PREFIX_DEFAULT,
            error: None,
        }
    }

    fn println(&mut self, text: &str) {
        if let Err(err) = self.multi.println(text)
            && err.kind() != io::ErrorKind::BrokenPipe
            && self.error.is_none()
        {
            self.error = Some(err);
        }
    }

    fn job_label(&self, job: &str) -> String {
        let width = self.width;
        paint(
            &format!("{job:<width$}"),
            self.color,
            self.recorder.job_style(job),
        )
    }

    /// The job's bar, created on its first event unless it already finished.
    fn bar(&mut self, job: &str, started_at: Option<u64>) -> Option<ProgressBar> {
        let label = self.job_label(job);
        let entry = self.jobs.entry(job.to_owned()).or_default();
        if entry.finished {
            return None;
        }
        if entry.bar.is_none() {
            let elapsed = started_at
                .map(|at| keelson_engine::events::now_ms().saturating_sub(at))
                .unwrap_or(0);
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
                .with_style(self.style.clone())
                .with_prefix(label)
                .with_elapsed(Duration::from_millis(elapsed));
            entry.bar = Some(self.multi.add(bar));
        }
        entry.bar.clone()
    }

    fn tick(&self) {
        for job in self.jobs.values() {
            if let Some(bar) = &job.bar {
                bar.tick();
            }
        }
    }

    fn event(&mut self, event: &Event) {
        self.recorder.record(event);
        match event {
            Event::RunStarted {
                run_id,
                number,
                jobs,
                ..
            } => {
                let widest = jobs.iter().map(|j| width_of(j)).max().unwrap_or(0);
                self.width = widest.min(PREFIX_MAX);
                let head = paint(
                    &format!("run {run_id} (#{number})"),
                    self.color,
                    Style::new().bold(),
                );
                self.println(&format!("{head}: {}", plural(jobs.len(), "job", "jobs")));
            }
            Event::JobStarted { job, at_ms } => {
                self.bar(job, Some(*at_ms));
            }
            Event::StepStarted {
                job, name, attempt, ..
            } => {
                let mut step = name.clone();
                if *attempt > 1 {
                    step.push_str(&format!(" (attempt {attempt})"));
                }
                if let Some(bar) = self.bar(job, None) {
                    bar.set_message(sanitize(&step, false));
                }
                if let Some(entry) = self.jobs.get_mut(job) {
                    entry.step = Some(step);
                }
            }
            Event::Log { job, line, .. } => {
                let bar = self.bar(job, None);
                // Tabs would throw off the line-height sums of the terminal view.
                let kept = sanitize(line, self.color).replace('\t', "    ");
                let Some(entry) = self.jobs.get_mut(job) else {
                    return;
                };
                if entry.tail.len() == TAIL_LINES {
                    entry.tail.pop_front();
                }
                entry.tail.push_back(kept);
                if let Some(bar) = bar {
                    let shown = sanitize(line, false).replace('\t', " ");
                    let message = match &entry.step {
                        Some(step) => format!("{} › {shown}", sanitize(step, false)),
                        None => shown,
                    };
                    bar.set_message(message);
                }
            }
            Event::StepFinished {
                job,
                name,
                result: Outcome::Failure,
                exit_code,
                reason,
                ..
            } => {
                let mut text = format!("step {name:?}");
                if let Some(code) = exit_code {
                    text.push_str(&format!(" exit {code}"));
                }
                if let Some(reason) = reason {
                    text.push_str(&format!(" ({reason})"));
                }
                self.jobs.entry(job.clone()).or_default().failed_step = Some(text);
            }
            Event::StepFinished { .. } | Event::StepRecord { .. } => {}
            Event::JobFinished {
                job,
                result,
                reason,
                duration_ms,
                cache,
                reused,
                ..
            } => self.job_finished(
                job,
                *result,
                reason.as_deref(),
                *duration_ms,
                cache,
                *reused,
            ),
            Event::RunFinished { .. } => {}
        }
    }

    fn job_finished(
        &mut self,
        job: &str,
        result: Outcome,
        reason: Option<&str>,
        duration_ms: u64,
        cache: &CacheStatus,
        reused: bool,
    ) {
        let label = self.job_label(job);
        let entry = self.jobs.entry(job.to_owned()).or_default();
        entry.finished = true;
        if let Some(bar) = entry.bar.take() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        let tail = std::mem::take(&mut entry.tail);
        let failed_step = entry.failed_step.take();
        entry.step = None;

        let duration = if result == Outcome::Skipped {
            "-".to_owned()
        } else {
            format_duration(duration_ms)
        };
        let mut details = Vec::new();
        match result {
            Outcome::Success => {}
            Outcome::Failure => {
                details.extend(reason.map(str::to_owned));
                details.extend(failed_step);
            }
            Outcome::Skipped | Outcome::Cancelled => {
                let mut text = result.to_string();
                if let Some(reason) = reason {
                    text.push_str(&format!(" ({reason})"));
                }
                details.push(text);
            }
        }
        details.extend(job_notes(cache, reused));
        let symbol = paint(outcome_symbol(result), self.color, outcome_style(result));
        let mut line = format!("{symbol} {label} {duration:>7}");
        if !details.is_empty() {
            line.push_str("  ");
            line.push_str(&paint(
                &details.join(", "),
                self.color,
                if result == Outcome::Success {
                    Style::new().dimmed()
                } else {
                    outcome_style(result)
                },
            ));
        }
        if result == Outcome::Failure && !tail.is_empty() {
            let gutter = paint("    │", self.color, Style::new().dimmed());
            for tail_line in &tail {
                line.push('\n');
                line.push_str(&gutter);
                line.push(' ');
                line.push_str(tail_line);
            }
        }
        self.println(&line);
    }

    fn finish(mut self) -> io::Result<RunSummary> {
        for job in self.jobs.values_mut() {
            if let Some(bar) = job.bar.take() {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
        }
        // Closing the draw target before writing directly keeps the summary intact.
        if let Err(err) = self.multi.clear()
            && self.error.is_none()
            && err.kind() != io::ErrorKind::BrokenPipe
        {
            self.error = Some(err);
        }
        if self.recorder.seen_any {
            let summary = &self.recorder.summary;
            let mut text = format!("\n{}\n", format_summary_table(summary, self.color));
            if let Some(id) = &summary.run_id {
                text.push_str(&logs_hint(id, self.color));
                text.push('\n');
            }
            let mut out = BufWriter::new(io::stdout().lock());
            if let Err(err) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
                && err.kind() != io::ErrorKind::BrokenPipe
                && self.error.is_none()
            {
                self.error = Some(err);
            }
        }
        match self.error {
            Some(err) => Err(err),
            None => Ok(self.recorder.summary),
        }
    }
}

#[cfg(test)]
mod tests {
    use indexmap::IndexMap;
    use tokio::sync::mpsc::unbounded_channel;

    use super::*;

    fn job_finished(job: &str, result: Outcome, ms: u64, cache: CacheStatus) -> Event {
        Event::JobFinished {
            job: job.into(),
            result,
            reason: None,
            duration_ms: ms,
            cache,
            reused: false,
            outputs: IndexMap::new(),
            at_ms: 1_000 + ms,
        }
    }

    /// A small run: `build` succeeds with a cache hit, `test` fails, `deploy` is skipped.
    fn scripted_run() -> Vec<Event> {
        vec![
            Event::RunStarted {
                run_id: "r1".into(),
                number: 7,
                jobs: vec!["build".into(), "test".into(), "deploy".into()],
                at_ms: 1_000,
            },
            Event::JobStarted {
                job: "build".into(),
                at_ms: 1_001,
            },
            Event::StepStarted {
                job: "build".into(),
                step: 0,
                name: "compile".into(),
                attempt: 1,
                at_ms: 1_002,
            },
            Event::Log {
                job: "build".into(),
                step: Some(0),
                stream: Stream::Stdout,
                line: "compiling…".into(),
                at_ms: 1_003,
            },
            Event::StepFinished {
                job: "build".into(),
                step: 0,
                name: "compile".into(),
                result: Outcome::Success,
                exit_code: Some(0),
                reason: None,
                duration_ms: 1_200,
                at_ms: 2_203,
            },
            Event::JobFinished {
                job: "build".into(),
                result: Outcome::Success,
                reason: None,
                duration_ms: 1_250,
                cache: CacheStatus::Hit("k1".into()),
                reused: false,
                outputs: IndexMap::new(),
                at_ms: 2_251,
            },
            Event::JobStarted {
                job: "test".into(),
                at_ms: 2_260,
            },
            Event::Log {
                job: "test".into(),
                step: None,
                stream: Stream::System,
                line: "cache miss".into(),
                at_ms: 2_261,
            },
            Event::StepStarted {
                job: "test".into(),
                step: 0,
                name: "unit".into(),
                attempt: 2,
                at_ms: 2_262,
            },
            Event::StepFinished {
                job: "test".into(),
                step: 0,
                name: "unit".into(),
                result: Outcome::Failure,
                exit_code: Some(2),
                reason: None,
                duration_ms: 850,
                at_ms: 3_112,
            },
            Event::JobFinished {
                job: "test".into(),
                result: Outcome::Failure,
                reason: None,
                duration_ms: 860,
                cache: CacheStatus::Miss,
                reused: false,
                outputs: IndexMap::new(),
                at_ms: 3_120,
            },
            Event::JobFinished {
                job: "deploy".into(),
                result: Outcome::Skipped,
                reason: Some("needs test failed".into()),
                duration_ms: 0,
                cache: CacheStatus::None,
                reused: false,
                outputs: IndexMap::new(),
                at_ms: 3_121,
            },
            Event::RunFinished {
                run_id: "r1".into(),
                result: Outcome::Failure,
                duration_ms: 2_125,
                at_ms: 3_125,
            },
        ]
    }

    fn plain_lines(events: &[Event], color: bool) -> (Vec<String>, PlainState) {
        let mut state = PlainState::new();
        let lines = events
            .iter()
            .filter_map(|e| format_plain_event(e, color, &mut state))
            .collect();
        (lines, state)
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0), "0ms");
        assert_eq!(format_duration(850), "850ms");
        assert_eq!(format_duration(999), "999ms");
        assert_eq!(format_duration(1_000), "1.0s");
        assert_eq!(format_duration(12_345), "12.3s");
        assert_eq!(format_duration(59_949), "59.9s");
        assert_eq!(format_duration(59_950), "1m00s");
        assert_eq!(format_duration(125_000), "2m05s");
        assert_eq!(format_duration(3_725_000), "1h02m05s");
        assert_eq!(format_elapsed(4_900), "4s");
        assert_eq!(format_elapsed(125_000), "2m05s");
    }

    #[test]
    fn plain_lines_without_colour() {
        let (lines, _) = plain_lines(&scripted_run(), false);
        let body: Vec<&str> = lines[..lines.len() - 1]
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(
            body,
            [
                "run r1 (#7): 3 jobs",
                "[build ] job started",
                "[build ] ▶ compile",
                "[build ] compiling…",
                "[build ] ✓ compile (1.2s)",
                "[build ] ✓ job success in 1.3s [cache hit]",
                "[test  ] job started",
                "[test  ] » cache miss",
                "[test  ] ▶ unit (attempt 2)",
                "[test  ] ✗ unit (850ms) exit 2",
                "[test  ] ✗ job failure in 860ms [cache miss]",
                "[deploy] ⊘ job skipped (needs test failed)",
            ]
        );
        assert!(lines.iter().all(|l| !l.contains('\x1b')));
        let last = lines.last().map(String::as_str).unwrap_or_default();
        assert!(last.starts_with("\njob "), "{last:?}");
        assert!(last.ends_with("\nfull logs: keelson logs r1"), "{last:?}");
    }

    #[test]
    fn prefix_defaults_before_run_started_and_caps_long_ids() {
        let mut state = PlainState::new();
        let log = Event::Log {
            job: "build".into(),
            step: None,
            stream: Stream::Stderr,
            line: "warning".into(),
            at_ms: 0,
        };
        assert_eq!(
            format_plain_event(&log, false, &mut state).as_deref(),
            Some("[build       ] warning")
        );
        let long = "x".repeat(40);
        let started = Event::RunStarted {
            run_id: "r".into(),
            number: 1,
            jobs: vec!["a".into(), long.clone()],
            at_ms: 0,
        };
        format_plain_event(&started, false, &mut state);
        let job_started = |job: &str| Event::JobStarted {
            job: job.into(),
            at_ms: 0,
        };
        assert_eq!(
            format_plain_event(&job_started("a"), false, &mut state),
            Some(format!("[a{}] job started", " ".repeat(PREFIX_MAX - 1)))
        );
        assert_eq!(
            format_plain_event(&job_started(&long), false, &mut state),
            Some(format!("[{long}] job started"))
        );
    }

    #[test]
    fn step_skips_cancellations_and_failure_reasons() {
        let mut state = PlainState::new();
        let step = |result, exit_code, reason: Option<&str>| Event::StepFinished {
            job: "b".into(),
            step: 1,
            name: "lint".into(),
            result,
            exit_code,
            reason: reason.map(Into::into),
            duration_ms: 30_000,
            at_ms: 0,
        };
        let mut fmt = |e: Event| format_plain_event(&e, false, &mut state).unwrap_or_default();
        assert_eq!(
            fmt(step(Outcome::Skipped, None, Some("if: false"))),
            "[b           ] ⊘ lint skipped (if: false)"
        );
        assert_eq!(
            fmt(step(Outcome::Skipped, None, None)),
            "[b           ] ⊘ lint skipped"
        );
        assert_eq!(
            fmt(step(Outcome::Cancelled, None, Some("run cancelled"))),
            "[b           ] ⊘ lint cancelled (run cancelled)"
        );
        assert_eq!(
            fmt(step(Outcome::Failure, None, Some("timed out after 30s"))),
            "[b           ] ✗ lint (30.0s) timed out after 30s"
        );
        assert_eq!(
            fmt(step(Outcome::Failure, Some(137), Some("timed out"))),
            "[b           ] ✗ lint (30.0s) exit 137 (timed out)"
        );
        assert_eq!(
            fmt(step(Outcome::Failure, None, None)),
            "[b           ] ✗ lint (30.0s) failed"
        );
    }

    #[test]
    fn colours_only_when_asked_and_stable_per_job() {
        let (lines, _) = plain_lines(&scripted_run(), true);
        assert!(lines.iter().all(|l| l.contains('\x1b')));
        // The two `build` lines share one prefix colour, `test` has another.
        let prefix = |line: &str| line.split(']').next().unwrap_or_default().to_owned();
        assert_eq!(prefix(&lines[1]), prefix(&lines[2]));
        assert_ne!(prefix(&lines[1]), prefix(&lines[6]));
        // Results are green / red.
        assert!(lines[4].contains("\x1b[32m"), "{:?}", lines[4]);
        assert!(lines[9].contains("\x1b[31m"), "{:?}", lines[9]);
    }

    #[test]
    fn summary_table() {
        let (_, state) = plain_lines(&scripted_run(), false);
        assert_eq!(
            format_summary_table(state.summary(), false),
            "\
job     result   duration  cache  note
build   success  1.3s      hit
test    failure  860ms     miss
deploy  skipped  -         -      needs test failed
run r1: failure in 2.1s — 3 jobs (1 ok, 1 failed, 1 skipped)"
        );
    }

    #[test]
    fn summary_table_cache_labels_and_counts() {
        let mut reused = job_finished("lint", Outcome::Success, 5, CacheStatus::Miss);
        if let Event::JobFinished { reused: r, .. } = &mut reused {
            *r = true;
        }
        let events = [
            Event::RunStarted {
                run_id: "r2".into(),
                number: 1,
                jobs: vec!["a".into(), "lint".into(), "c".into()],
                at_ms: 1_000,
            },
            // Finishing order differs from plan order.
            job_finished("c", Outcome::Cancelled, 125_000, CacheStatus::None),
            job_finished(
                "a",
                Outcome::Success,
                42,
                CacheStatus::Partial("deps-".into()),
            ),
            reused,
            Event::RunFinished {
                run_id: "r2".into(),
                result: Outcome::Success,
                duration_ms: 126_400,
                at_ms: 127_400,
            },
        ];
        let (_, state) = plain_lines(&events, false);
        assert_eq!(
            format_summary_table(state.summary(), false),
            "\
job   result     duration  cache
a     success    42ms      partial (deps-)
lint  success    5ms       reused
c     cancelled  2m05s     -
run r2: success in 2m06s — 3 jobs (2 ok, 0 failed, 0 skipped, 1 cancelled)"
        );
    }

    #[test]
    fn summary_table_colour_keeps_alignment() {
        let (_, state) = plain_lines(&scripted_run(), true);
        let coloured = format_summary_table(state.summary(), true);
        assert!(coloured.contains('\x1b'));
        assert_eq!(
            sanitize_all(&coloured),
            format_summary_table(state.summary(), false)
        );
    }

    fn sanitize_all(text: &str) -> String {
        text.lines()
            .map(|l| sanitize(l, false))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn sanitizing_log_lines() {
        assert_eq!(sanitize("\x1b[31mred\x1b[0m", false), "red");
        assert_eq!(
            sanitize("\x1b[31mred", true),
            "\x1b[31mred\x1b[0m",
            "colour kept, then reset"
        );
        assert_eq!(sanitize("a\x1b[2Kb\x07c", true), "abc", "no cursor codes");
        assert_eq!(sanitize("10%\r50%\r100%", false), "100%");
        assert_eq!(sanitize("done\r\n", false), "done");
        assert_eq!(
            sanitize("x\x1b]8;;http://a\x1b\\link\x1b]8;;\x07", false),
            "xlink"
        );
        assert_eq!(sanitize("a\tb\u{9b}c\u{7f}", false), "a\tbc");
    }

    #[tokio::test]
    async fn json_mode_writes_one_object_per_line() {
        let (tx, rx) = unbounded_channel();
        let events = scripted_run();
        for event in &events {
            tx.send(event.clone()).ok();
        }
        drop(tx);
        let mut out = Vec::new();
        let options = RenderOptions {
            mode: Mode::Json,
            color: true,
        };
        let summary = render_to(rx, options, &mut out).await.ok();
        let text = String::from_utf8(out).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), events.len());
        assert!(text.ends_with('\n') && !text.contains('\x1b'));
        for (line, event) in lines.iter().zip(&events) {
            let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
            assert!(value["event"].is_string(), "{line}");
            assert_eq!(*line, serde_json::to_string(event).unwrap_or_default());
        }
        assert!(lines[0].starts_with(r#"{"event":"run_started","run_id":"r1""#));

        let summary = summary.unwrap_or_default();
        assert_eq!(summary.run_id.as_deref(), Some("r1"));
        assert_eq!(summary.result, Some(Outcome::Failure));
        assert_eq!(summary.duration_ms, 2_125);
        let jobs: Vec<(&str, Outcome)> = summary
            .jobs
            .iter()
            .map(|j| (j.job.as_str(), j.result))
            .collect();
        assert_eq!(
            jobs,
            [
                ("build", Outcome::Success),
                ("test", Outcome::Failure),
                ("deploy", Outcome::Skipped)
            ]
        );
        assert_eq!(summary.jobs[0].cache, CacheStatus::Hit("k1".into()));
        assert_eq!(summary.jobs[2].reason.as_deref(), Some("needs test failed"));
    }

    #[tokio::test]
    async fn plain_mode_ends_with_the_summary() {
        let (tx, rx) = unbounded_channel();
        for event in scripted_run() {
            tx.send(event).ok();
        }
        drop(tx);
        let mut out = Vec::new();
        let options = RenderOptions {
            mode: Mode::Plain,
            color: false,
        };
        let summary = render_to(rx, options, &mut out).await.ok();
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.starts_with("run r1 (#7): 3 jobs\n[build ] job started\n"));
        assert!(text.ends_with(
            "run r1: failure in 2.1s — 3 jobs (1 ok, 1 failed, 1 skipped)\n\
             full logs: keelson logs r1\n"
        ));
        assert_eq!(summary.map(|s| s.jobs.len()), Some(3));
    }

    #[tokio::test]
    async fn plain_mode_summarizes_a_run_that_never_finished() {
        let (tx, rx) = unbounded_channel();
        for event in scripted_run().into_iter().take(6) {
            tx.send(event).ok();
        }
        drop(tx);
        let mut out = Vec::new();
        let options = RenderOptions {
            mode: Mode::Live,
            color: false,
        };
        let summary = render_to(rx, options, &mut out).await.ok();
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(
            text.ends_with(
                "run r1: incomplete after 1.3s — 1 job (1 ok, 0 failed, 0 skipped)\n\
                 full logs: keelson logs r1\n"
            ),
            "{text}"
        );
        let summary = summary.unwrap_or_default();
        assert_eq!(summary.result, None);
        assert_eq!(summary.duration_ms, 1_251);
    }

    #[tokio::test]
    async fn write_errors_are_reported_after_consuming_everything() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = unbounded_channel();
        for event in scripted_run() {
            tx.send(event).ok();
        }
        drop(tx);
        let options = RenderOptions {
            mode: Mode::Json,
            color: false,
        };
        let err = render_to(rx, options, Failing).await.err();
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("disk full"));
    }

    #[test]
    fn live_view_handles_a_whole_run_without_a_terminal() {
        let mut live = Live::new(ProgressDrawTarget::hidden(), false);
        for event in scripted_run() {
            live.event(&event);
            live.tick();
        }
        assert!(live.jobs.values().all(|j| j.bar.is_none()));
        assert_eq!(live.recorder.summary.jobs.len(), 3);
    }

    #[test]
    fn live_tail_keeps_the_last_lines() {
        let mut live = Live::new(ProgressDrawTarget::hidden(), false);
        for i in 0..50 {
            live.event(&Event::Log {
                job: "j".into(),
                step: None,
                stream: Stream::Stdout,
                line: format!("line {i}"),
                at_ms: 0,
            });
        }
        let tail = &live.jobs["j"].tail;
        assert_eq!(tail.len(), TAIL_LINES);
        assert_eq!(tail.front().map(String::as_str), Some("line 30"));
        assert_eq!(tail.back().map(String::as_str), Some("line 49"));
    }
}
