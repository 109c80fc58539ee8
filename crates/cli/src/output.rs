//! What the commands print. Data goes to stdout (one line per chat or
//! message, easy to cut and grep); warnings and errors go to stderr.

pub use crate::terminal::terminal;
use chatvault::{Attachment, Chat, ChatSummary, Error, Event, Role, SyncReport, SyncStatus};
use std::error::Error as _;
use std::io::Write;
use std::sync::Arc;

/// Prints one line on standard output, like `println!`, through [`line`]: a
/// closed pipe (`chatvault ls | head -2`) ends the process quietly with exit 0.
macro_rules! out {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use out;

/// Writes `args` and a line break to standard output. Standard output is
/// data for the next program: when that program has stopped reading (a
/// closed pipe, as after `| head`), the output is over and the process
/// exits 0 without a word; any other write error exits 6.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout
        .write_fmt(args)
        .and_then(|()| stdout.write_all(b"\n"))
    {
        stdout_failed(&e);
    }
}

/// Writes `bytes` to standard output and flushes it, ending the process as
/// [`line`] does when that fails.
pub fn raw(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        stdout_failed(&e);
    }
}

/// Standard output as a writer for data streamed to it (an export), ending
/// the process as [`line`] does when a write fails.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        std::io::stdout()
            .lock()
            .write(bytes)
            .map_err(|e| stdout_failed(&e))
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        std::io::stdout()
            .lock()
            .write_all(bytes)
            .map_err(|e| stdout_failed(&e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout()
            .lock()
            .flush()
            .map_err(|e| stdout_failed(&e))
    }
}

/// A progress bar on standard error for `total` bytes (uploads, downloads,
/// exports), hidden when standard error is not a terminal.
///
/// Errors: [`Error::InvalidInput`] if the bar's template does not parse (a
/// bug).
pub fn bytes_progress(total: u64) -> Result<indicatif::ProgressBar, Error> {
    use std::io::IsTerminal as _;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {binary_bytes}/{binary_total_bytes}, {binary_bytes_per_sec}, \
             {eta} left",
        )
        .map_err(|e| Error::invalid(format!("progress template: {e}")))?,
    );
    Ok(bar)
}

/// The end of a process whose standard output cannot be written.
fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(i32::from(crate::exit::LOCAL));
}

/// A failed operation on a file of the CLI's own (config, device key,
/// export, the terminal): reported as a file error, not as the replica's.
#[derive(Debug)]
pub struct FileError(std::io::Error);

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// [`Error::Local`] (exit 6) for a file of the CLI's own: `message` says
/// what failed on which file.
pub fn file_error(message: impl Into<String>, e: std::io::Error) -> Error {
    Error::local(message, FileError(e))
}

/// Prints an error and its causes on one line.
pub fn error(e: &Error) {
    let mut line = match e {
        Error::Local {
            message,
            source: Some(source),
        } if source.is::<FileError>() => format!("error: file error: {message}"),
        _ => format!("error: {e}"),
    };
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    if matches!(e, Error::Unavailable { .. }) {
        line.push_str(" (check the network and the vault URL, then run the command again)");
    }
    eprintln!("{}", terminal(&line));
}

/// Prints `value` as pretty JSON.
pub fn json(value: &impl serde::Serialize) -> chatvault::Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::invalid(format!("cannot encode JSON: {e}")))?;
    out!("{text}");
    Ok(())
}

/// One line per chat: id (short, see [`crate::ids::short`], unless
/// `full_ids`), star, message count, last activity, title.
pub fn sidebar(chats: &[Arc<ChatSummary>], full_ids: bool) {
    let len = if full_ids {
        32
    } else {
        crate::ids::short_len(chats.iter().map(|c| &c.id))
    };
    for chat in chats {
        out!(
            "{}  {}  {:>5}  {}  {}",
            crate::ids::short(&chat.id, len),
            if chat.starred { '*' } else { ' ' },
            chat.message_count,
            time(chat.last_activity.millis),
            terminal(&chat.title)
        );
    }
}

/// The title, then each message of the current path from number `from`
/// (1-based) on: a header line (marked `[2/3]` where the message has
/// alternatives) and its text, indented.
pub fn chat(chat: &Chat, from: usize) {
    let star = if chat.is_starred() { "  [starred]" } else { "" };
    out!("{}{star}", terminal(chat.title()));
    let path = chat.path();
    if from > 1 {
        out!(
            "\n({} earlier message(s) not shown)",
            (from - 1).min(path.len())
        );
    }
    for entry in path.into_iter().skip(from.saturating_sub(1)) {
        message(
            entry.message,
            "",
            alternatives(entry.position, entry.alternatives),
        );
    }
}

/// The title, then every live message of every branch: alternatives
/// indented under their place, the messages of the current path marked
/// `*`.
pub fn tree(chat: &Chat) {
    let star = if chat.is_starred() { "  [starred]" } else { "" };
    out!("{}{star}", terminal(chat.title()));
    for entry in chat.tree() {
        let indent = "  ".repeat(entry.depth);
        let mut marker = alternatives(entry.position, entry.alternatives);
        if entry.on_path {
            marker.push_str("  *");
        }
        message(entry.message, &indent, marker);
    }
}

/// `  [2/3]` for a message with alternatives, else nothing.
fn alternatives(position: usize, count: usize) -> String {
    if count > 1 {
        format!("  [{position}/{count}]")
    } else {
        String::new()
    }
}

/// One message: its header line (id, role, time, `marker`) and its text,
/// both after `indent`.
fn message(message: &chatvault::Message, indent: &str, marker: String) {
    out!(
        "\n{indent}{}  {:<9}  {}{marker}",
        message.id,
        role(message.role()),
        time(message.written_millis())
    );
    for line in message.content().lines() {
        out!("{indent}    {}", terminal(line));
    }
    for attachment in message.attachments() {
        out!("{indent}    {}", attachment_line(attachment));
    }
}

/// `[attachment] NAME (MEDIA TYPE, SIZE)`, terminal-safe (names come from
/// other devices).
pub fn attachment_line(attachment: &Attachment) -> String {
    terminal(&format!(
        "[attachment] {} ({}, {})",
        attachment.name,
        attachment.media_type,
        size(attachment.size)
    ))
    .into_owned()
}

/// A byte count for people: `512 B`, `2.4 MB`, `1.0 GB` (powers of 1000).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    // Display only: f64 is exact enough.
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// What a sync round did.
pub fn report(report: &SyncReport, status: &SyncStatus) {
    out!(
        "pulled {}, pushed {}, conflicts merged {}, pending {}; {}",
        report.pulled,
        report.pushed,
        report.conflicts_resolved,
        report.pending,
        self::status(status)
    );
}

/// Records a sync could not open: the rest of the vault still synced.
pub fn skipped(report: &SyncReport) {
    for record in &report.skipped {
        eprintln!(
            "warning: chat {} (version {}) was skipped: {}",
            record.chat,
            record.version,
            terminal(&record.error.to_string())
        );
    }
}

/// One line per event; `title` names an upserted chat.
pub fn event(event: &Event, title: Option<&str>) {
    match event {
        Event::ChatUpserted(id) => {
            out!("upserted {id}  {}", terminal(title.unwrap_or("")))
        }
        Event::ChatDeleted(id) => out!("deleted {id}"),
        Event::SyncStatus(s) => out!("status {}", status(s)),
        Event::RecordSkipped { chat, reason } => {
            out!("skipped {chat}: {}", terminal(reason))
        }
        other => out!("{}", terminal(&format!("{other:?}"))),
    }
}

/// A sync status in words (terminal-safe: reasons come from servers).
pub fn status(status: &SyncStatus) -> String {
    let words = match status {
        SyncStatus::Offline { reason } => format!("offline ({reason})"),
        SyncStatus::Syncing => "syncing".into(),
        SyncStatus::Synced => "synced".into(),
        SyncStatus::Waiting { reason } => {
            format!("waiting for files still on their way ({reason})")
        }
        SyncStatus::Error { reason } => format!("error ({reason})"),
        SyncStatus::Incomplete { skipped } => {
            format!("synced, but {skipped} chat(s) could not be opened yet and are retried (run `chatvault verify`)")
        }
        other => format!("{other:?}"),
    };
    terminal(&words).into_owned()
}

/// A role as listings show it.
pub fn role(role: &Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::System => "system",
        Role::Tool => "tool",
    }
}

/// Unix milliseconds as UTC wall time, to the second.
fn time(millis: u64) -> String {
    i64::try_from(millis)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1000), "1.0 kB");
        assert_eq!(size(2_400_000), "2.4 MB");
        assert_eq!(size(999_999), "1.0 MB");
        assert_eq!(size(3_000_000_000_000_000), "3000.0 TB");
    }
}
