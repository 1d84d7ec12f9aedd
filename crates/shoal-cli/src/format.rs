//! Output helpers shared by every verb: docker-style tables (Go `tabwriter`
//! semantics: minimum cell width 10, padding 3), `--format` handling (`table`
//! prefix, `json`, Go-template subset from [`crate::template`]), ID
//! truncation, docker's `units.HumanDuration` / `units.BytesSize`, Go's
//! `time.Duration` printing and parsing, natural sort order, image-name
//! familiarisation and JSON re-indentation that keeps the server's key order.

use std::cmp::Ordering;
use std::io::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::template::Template;
pub use shoal_compose::units::{parse_go_duration, ram_in_bytes};

/// Docker's short-ID length (`formatter.TruncateID`).
pub const SHORT_ID_LEN: usize = 12;

/// Writes to stdout, ignoring errors such as a closed pipe (`shoal ... | head`).
pub fn out(text: &str) {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(text.as_bytes());
    let _ = lock.flush();
}

/// Writes to stderr, ignoring errors.
pub fn err(text: &str) {
    let stderr = std::io::stderr();
    let mut lock = stderr.lock();
    let _ = lock.write_all(text.as_bytes());
    let _ = lock.flush();
}

/// `formatter.TruncateID`: drops an `algo:` prefix and keeps 12 characters.
pub fn truncate_id(id: &str) -> String {
    let id = match id.find(':') {
        Some(i) => &id[i + 1..],
        None => id,
    };
    id.chars().take(SHORT_ID_LEN).collect()
}

/// `formatter.Ellipsis` for ASCII and wide text: at most `max` display columns,
/// ending in `…` when cut.
pub fn ellipsis(s: &str, max: usize) -> String {
    if max == 0 {
        return String::new();
    }
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= max {
        return s.to_string();
    }
    if max == 1 {
        return chars[0].to_string();
    }
    let mut out: String = chars[..max - 1].iter().collect();
    out.push('…');
    out
}

/// `formatter.PrettyPrint` for strings: first letter upper case, the rest lower case
/// (a single character is lower-cased, as docker does).
pub fn capitalize_first(s: &str) -> String {
    let mut chars = s.chars();
    match (chars.next(), s.chars().count()) {
        (None, _) => String::new(),
        (Some(c), 1) => c.to_lowercase().collect(),
        (Some(c), _) => {
            let mut out: String = c.to_uppercase().collect();
            out.push_str(&chars.as_str().to_lowercase());
            out
        }
    }
}

/// docker/go-units `HumanDuration`, with its exact thresholds. `nanos` may be negative
/// (clock skew), which reads as "Less than a second".
pub fn human_duration(nanos: i64) -> String {
    let d = nanos as f64;
    let seconds = (d / 1e9) as i64;
    if seconds < 1 {
        return "Less than a second".to_string();
    }
    if seconds == 1 {
        return "1 second".to_string();
    }
    if seconds < 60 {
        return format!("{seconds} seconds");
    }
    let minutes = (d / 60e9) as i64;
    if minutes == 1 {
        return "About a minute".to_string();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d / 3600e9 + 0.5) as i64;
    if hours == 1 {
        return "About an hour".to_string();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", ((d / 3600e9) as i64) / 24 / 365)
}

/// Human duration of the time elapsed since `ts` ("5 seconds", "About a minute").
pub fn human_since(ts: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let nanos = match ts {
        Some(t) => (now - t).num_nanoseconds().unwrap_or(i64::MAX),
        // Go's zero time is two thousand years ago.
        None => i64::MAX,
    };
    human_duration(nanos)
}

fn frac_digits(frac: u64, digits: usize) -> String {
    if frac == 0 {
        return String::new();
    }
    let padded = format!("{frac:0digits$}");
    format!(".{}", padded.trim_end_matches('0'))
}

/// Go's `time.Duration.String()` ("5s", "1m30s", "1h0m0s", "500ms", "0s").
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u < 1_000_000_000 {
        let (unit, div, digits) = if u < 1_000 {
            ("ns", 1, 0)
        } else if u < 1_000_000 {
            ("µs", 1_000, 3)
        } else {
            ("ms", 1_000_000, 6)
        };
        return format!("{sign}{}{}{unit}", u / div, frac_digits(u % div, digits));
    }
    let secs = u / 1_000_000_000;
    let s = format!("{}{}s", secs % 60, frac_digits(u % 1_000_000_000, 9));
    let h = secs / 3600;
    let m = (secs % 3600) / 60;
    if h > 0 {
        format!("{sign}{h}h{m}m{s}")
    } else if m > 0 {
        format!("{sign}{m}m{s}")
    } else {
        format!("{sign}{s}")
    }
}

/// Go's `fmt.Sprintf("%.Ng", v)`.
pub fn format_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    if !v.is_finite() {
        return format!("{v}");
    }
    let prec = prec.max(1);
    let sci = format!("{:.*e}", prec - 1, v);
    let (mantissa, exp) = match sci.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().unwrap_or(0)),
        None => (sci.clone(), 0),
    };
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= prec as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{}{:02}", trim(&mantissa), sign, exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{v:.decimals$}"))
    }
}

/// docker/go-units `BytesSize` ("20MiB", "1.953GiB").
pub fn bytes_size(size: f64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut size = size;
    let mut i = 0;
    while size >= 1024.0 && i < UNITS.len() - 1 {
        size /= 1024.0;
        i += 1;
    }
    format!("{}{}", format_g(size, 4), UNITS[i])
}

/// `sortorder.NaturalLess` as an ordering: digit runs compare by value, digits sort
/// before other characters.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (c1, c2) = (a[i], b[j]);
        let (d1, d2) = (c1.is_ascii_digit(), c2.is_ascii_digit());
        if d1 != d2 {
            return if d1 {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        if !d1 {
            if c1 != c2 {
                return c1.cmp(&c2);
            }
            i += 1;
            j += 1;
            continue;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let (nz1, nz2) = (i, j);
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (l1, l2) = (i - nz1, j - nz2);
        if l1 != l2 {
            return l1.cmp(&l2);
        }
        let (n1, n2) = (&a[nz1..i], &b[nz2..j]);
        if n1 != n2 {
            return n1.cmp(n2);
        }
        if nz1 != nz2 {
            return nz1.cmp(&nz2);
        }
    }
    (a.len() - i.min(a.len())).cmp(&(b.len() - j.min(b.len())))
}

/// What docker shows for a task or service image: for a tagged reference, the
/// familiar `name:tag` (digest dropped, `docker.io/library/` removed); anything
/// else unchanged.
pub fn familiar_image(image: &str) -> String {
    let name_tag = image.split('@').next().unwrap_or(image);
    let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
    let Some(colon) = name_tag[last_slash..].rfind(':').map(|i| i + last_slash) else {
        return image.to_string();
    };
    let (name, tag) = (&name_tag[..colon], &name_tag[colon + 1..]);
    if name.is_empty() || tag.is_empty() {
        return image.to_string();
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return image.to_string();
    }
    let familiar = if domain == "docker.io" || domain == "index.docker.io" {
        match path.strip_prefix("library/") {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => path.to_string(),
        }
    } else {
        format!("{domain}/{path}")
    };
    format!("{familiar}:{tag}")
}

/// Go's `time.Time.String()` put through `PrettyPrint` ("2024-01-02 03:04:05.5 +0000 utc").
pub fn go_time_pretty(ts: Option<DateTime<Utc>>) -> String {
    let ts = ts.unwrap_or(DateTime::<Utc>::MIN_UTC);
    let frac = frac_digits(u64::from(ts.timestamp_subsec_nanos()), 9);
    let s = format!("{}{} +0000 UTC", ts.format("%Y-%m-%d %H:%M:%S"), frac);
    capitalize_first(&s)
}

/// Reads a timestamp out of a bollard model field whatever its representation
/// (`String`, or chrono/time when bollard's date features are unified in).
pub fn timestamp<T: serde::Serialize>(v: &Option<T>) -> Option<DateTime<Utc>> {
    let v = serde_json::to_value(v.as_ref()?).ok()?;
    let s = v.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The string form of a serde-serialisable enum (bollard models), "" for `None`.
pub fn enum_str<T: serde::Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Go's `json.Indent(dst, src, "", indent)`: re-indents JSON text keeping key order
/// and string escapes exactly as received.
pub fn indent_json(src: &str, indent: &str) -> String {
    let mut out = String::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut need_indent = false;
    let chars: Vec<char> = src.chars().collect();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(indent);
        }
    };
    for &c in &chars {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if c.is_whitespace() {
            continue;
        }
        if need_indent && c != ']' && c != '}' {
            need_indent = false;
            depth += 1;
            newline(&mut out, depth);
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                need_indent = true;
            }
            '}' | ']' => {
                if need_indent {
                    // empty object or array stays compact
                    need_indent = false;
                } else {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => {
                out.push(c);
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Go's `json.Compact`.
pub fn compact_json(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in src.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !c.is_whitespace() {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    out
}

fn write_json_string(out: &mut String, s: &str, escape_html: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' if escape_html => out.push_str(&format!("\\u{:04x}", c as u32)),
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Go's `encoding/json` output for decoded data: compact, map keys sorted;
/// `escape_html` turns `<`, `>`, `&` into `\u003c`... as `json.Marshal` does.
pub fn go_json(v: &Value, escape_html: bool) -> String {
    let mut out = String::new();
    write_go_json(&mut out, v, escape_html);
    out
}

fn write_go_json(out: &mut String, v: &Value, escape_html: bool) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_json_string(out, s, escape_html),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(out, item, escape_html);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(out, k, escape_html);
                out.push(':');
                write_go_json(out, &map[k.as_str()], escape_html);
            }
            out.push('}');
        }
    }
}

/// Docker's inspect output for raw objects: `[obj, obj]` re-indented with four
/// spaces, or `[]`, followed by a newline.
pub fn inspect_raw_array(raws: &[String]) -> String {
    if raws.is_empty() {
        return "[]\n".to_string();
    }
    let joined = format!(
        "[{}]",
        raws.iter().map(|r| r.trim()).collect::<Vec<_>>().join(",")
    );
    format!("{}\n", indent_json(&joined, "    "))
}

/// Renders `text` through a Go-style tabwriter (`minwidth` and `padding` with Go's
/// meaning: a cell is at least `minwidth` wide, padding included).
pub fn tabwrite(text: &str, minwidth: usize, padding: usize) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new())
        .minwidth(minwidth.saturating_sub(padding))
        .padding(padding);
    let _ = tw.write_all(text.as_bytes());
    let _ = tw.flush();
    match tw.into_inner() {
        Ok(buf) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => text.to_string(),
    }
}

/// A `--format` value prepared as docker's `formatter.Context` does.
#[derive(Debug, Clone)]
pub struct Format {
    /// Whether the output is a table (header row, tab alignment).
    pub table: bool,
    /// The template text once the `table` prefix and `\t`/`\n` escapes are handled.
    pub template: String,
}

impl Format {
    /// Prepares `source` (`table ...`, `json`, or a template).
    pub fn new(source: &str) -> Format {
        let (table, mut body) = if let Some(rest) = source.strip_prefix("table") {
            (true, rest.to_string())
        } else if source == "json" {
            (false, "{{json .}}".to_string())
        } else {
            (false, source.to_string())
        };
        body = body.trim_matches(' ').to_string();
        body = body.replace("\\t", "\t").replace("\\n", "\n");
        Format {
            table,
            template: body,
        }
    }
}

/// Renders rows as docker's `formatter.Context.Write` does: one template execution
/// per row followed by a newline; for tables a header line from `header` (field name
/// to column title) and tab alignment (minwidth 10, padding 3).
pub fn render(
    format: &Format,
    header: &serde_json::Map<String, Value>,
    rows: &[Value],
) -> Result<String, String> {
    let tmpl =
        Template::parse(&format.template).map_err(|e| format!("template parsing error: {e}"))?;
    let mut body = String::new();
    for row in rows {
        let line = tmpl
            .execute(row, false)
            .map_err(|e| format!("template parsing error: {e}"))?;
        body.push_str(&line);
        body.push('\n');
    }
    if !format.table {
        return Ok(body);
    }
    // Header errors are ignored by docker (partial output is kept).
    let header_line = tmpl
        .execute(&Value::Object(header.clone()), true)
        .unwrap_or_default();
    let text = format!("{header_line}\n{body}");
    Ok(tabwrite(&text, 10, 3))
}

/// Builds a header map from `(field, title)` pairs.
pub fn header(pairs: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truncates_ids() {
        assert_eq!(truncate_id("rl02d5gwz6chzu7il5fhtb8be"), "rl02d5gwz6ch");
        assert_eq!(truncate_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(truncate_id("short"), "short");
    }

    #[test]
    fn human_duration_thresholds() {
        let s = 1_000_000_000i64;
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(999_999_999), "Less than a second");
        assert_eq!(human_duration(-5 * s), "Less than a second");
        assert_eq!(human_duration(s), "1 second");
        assert_eq!(human_duration(5 * s), "5 seconds");
        assert_eq!(human_duration(59 * s), "59 seconds");
        assert_eq!(human_duration(60 * s), "About a minute");
        assert_eq!(human_duration(119 * s), "About a minute");
        assert_eq!(human_duration(120 * s), "2 minutes");
        assert_eq!(human_duration(59 * 60 * s), "59 minutes");
        // hours are rounded: 60 minutes to 89 minutes read "About an hour"
        assert_eq!(human_duration(60 * 60 * s), "About an hour");
        assert_eq!(human_duration(89 * 60 * s), "About an hour");
        assert_eq!(human_duration(90 * 60 * s), "2 hours");
        assert_eq!(human_duration(47 * 3600 * s), "47 hours");
        assert_eq!(human_duration(48 * 3600 * s), "2 days");
        assert_eq!(human_duration(13 * 24 * 3600 * s), "13 days");
        assert_eq!(human_duration(14 * 24 * 3600 * s), "2 weeks");
        assert_eq!(human_duration(59 * 24 * 3600 * s), "8 weeks");
        assert_eq!(human_duration(60 * 24 * 3600 * s), "2 months");
        assert_eq!(human_duration(729 * 24 * 3600 * s), "24 months");
        assert_eq!(human_duration(730 * 24 * 3600 * s), "2 years");
    }

    #[test]
    fn go_durations_print_and_parse() {
        let s = 1_000_000_000i64;
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(5 * s), "5s");
        assert_eq!(go_duration(90 * s), "1m30s");
        assert_eq!(go_duration(3600 * s), "1h0m0s");
        assert_eq!(go_duration(2160 * 3600 * s), "2160h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(4), "4ns");
        assert_eq!(go_duration(-2 * s), "-2s");

        assert_eq!(parse_go_duration("5s"), Ok(5 * s));
        assert_eq!(parse_go_duration("1m30s"), Ok(90 * s));
        assert_eq!(parse_go_duration("1.5h"), Ok(5400 * s));
        assert_eq!(parse_go_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_go_duration("10us"), Ok(10_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("-2m"), Ok(-120 * s));
        assert_eq!(
            parse_go_duration("5"),
            Err("time: missing unit in duration \"5\"".to_string())
        );
        assert_eq!(
            parse_go_duration("5x"),
            Err("time: unknown unit \"x\" in duration \"5x\"".to_string())
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes_size(20.0 * 1024.0 * 1024.0), "20MiB");
        assert_eq!(bytes_size(2_097_152_000.0), "1.953GiB");
        assert_eq!(bytes_size(512.0), "512B");
        assert_eq!(bytes_size(1536.0), "1.5KiB");
        assert_eq!(format_g(1234567.0, 4), "1.235e+06");
        assert_eq!(format_g(0.5, 4), "0.5");
        assert_eq!(ram_in_bytes("512m"), Ok(512 * 1024 * 1024));
        assert_eq!(ram_in_bytes("1g"), Ok(1024 * 1024 * 1024));
        assert_eq!(ram_in_bytes("1.5GiB"), Ok(1610612736));
        assert_eq!(ram_in_bytes("100"), Ok(100));
        assert_eq!(ram_in_bytes("10 MB"), Ok(10 * 1024 * 1024));
        assert_eq!(ram_in_bytes("10x"), Err("invalid suffix: 'x'".to_string()));
        assert!(ram_in_bytes("abc").is_err());
    }

    #[test]
    fn natural_order() {
        let mut names = vec![
            "node-10-foo",
            "node-2-foo",
            "node-1-foo",
            "alpha",
            "node-02",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            // fewer leading zeros sorts first, as in sortorder.NaturalLess
            vec![
                "alpha",
                "node-1-foo",
                "node-2-foo",
                "node-02",
                "node-10-foo"
            ]
        );
        assert_eq!(natural_cmp("a", "ab"), Ordering::Less);
        assert_eq!(natural_cmp("web.1", "web.1"), Ordering::Equal);
        assert_eq!(natural_cmp("svc.9", "svc.10"), Ordering::Less);
    }

    #[test]
    fn familiar_images() {
        assert_eq!(familiar_image("nginx:latest@sha256:abcd"), "nginx:latest");
        assert_eq!(familiar_image("docker.io/library/nginx:1.25"), "nginx:1.25");
        assert_eq!(familiar_image("docker.io/foo/bar:1"), "foo/bar:1");
        assert_eq!(
            familiar_image("registry:5000/foo/bar:1@sha256:00"),
            "registry:5000/foo/bar:1"
        );
        assert_eq!(familiar_image("nginx"), "nginx");
        assert_eq!(familiar_image("nginx@sha256:abcd"), "nginx@sha256:abcd");
        assert_eq!(familiar_image("localhost:5000/app"), "localhost:5000/app");
    }

    #[test]
    fn ellipsis_and_capitalize() {
        assert_eq!(ellipsis("short", 30), "short");
        assert_eq!(ellipsis("abcdefghij", 5), "abcd…");
        assert_eq!(capitalize_first("running"), "Running");
        assert_eq!(capitalize_first("READY"), "Ready");
        assert_eq!(capitalize_first("x"), "x");
        assert_eq!(capitalize_first(""), "");
    }

    #[test]
    fn json_indent_keeps_order() {
        let raw = r#"{"ID":"x","Spec":{"Name":"web","Labels":{}},"List":[],"N":[1,2]}"#;
        let want = "{\n    \"ID\": \"x\",\n    \"Spec\": {\n        \"Name\": \"web\",\n        \"Labels\": {}\n    },\n    \"List\": [],\n    \"N\": [\n        1,\n        2\n    ]\n}";
        assert_eq!(indent_json(raw, "    "), want);
        assert_eq!(inspect_raw_array(&[]), "[]\n");
        assert_eq!(
            inspect_raw_array(&["{\"a\":\"b, c\"}\n".to_string()]),
            "[\n    {\n        \"a\": \"b, c\"\n    }\n]\n"
        );
        assert_eq!(
            compact_json("{ \"a\" : [ 1, \"x y\" ] }"),
            "{\"a\":[1,\"x y\"]}"
        );
    }

    #[test]
    fn go_json_sorts_and_escapes() {
        let v = json!({"b": "*:80->80/tcp", "a": true, "c": [1, null]});
        assert_eq!(
            go_json(&v, true),
            r#"{"a":true,"b":"*:80-\u003e80/tcp","c":[1,null]}"#
        );
        assert_eq!(
            go_json(&v, false),
            r#"{"a":true,"b":"*:80->80/tcp","c":[1,null]}"#
        );
    }

    #[test]
    fn table_matches_docker_golden() {
        // cli/command/node/testdata/node-list-sort.golden
        let fmt = Format::new("table {{.ID}} {{if .Self}}*{{else}} {{ end }}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}");
        let hdr = header(&[
            ("ID", "ID"),
            ("Self", ""),
            ("Hostname", "HOSTNAME"),
            ("Status", "STATUS"),
            ("Availability", "AVAILABILITY"),
            ("ManagerStatus", "MANAGER STATUS"),
            ("EngineVersion", "ENGINE VERSION"),
        ]);
        let row = |id: &str, me: bool, host: &str, ms: &str, ev: &str| {
            json!({"ID": id, "Self": me, "Hostname": host, "Status": "Ready",
                   "Availability": "Active", "ManagerStatus": ms, "EngineVersion": ev})
        };
        let rows = vec![
            row("nodeID3", false, "node-1-foo", "", "1.13.0"),
            row("nodeID1", true, "node-2-foo", "Leader", "."),
            row("nodeID2", false, "node-10-foo", "Reachable", "18.03.0-ce"),
        ];
        let got = render(&fmt, &hdr, &rows).unwrap();
        let want = "\
ID          HOSTNAME      STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION
nodeID3     node-1-foo    Ready     Active                          1.13.0
nodeID1 *   node-2-foo    Ready     Active         Leader           .
nodeID2     node-10-foo   Ready     Active         Reachable        18.03.0-ce
";
        assert_eq!(got, want);
    }

    #[test]
    fn table_keeps_trailing_padding_of_empty_last_columns() {
        // cli/command/node/testdata/node-ps.with-errors.golden (first two rows)
        let fmt = Format::new("table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}");
        let hdr = header(&[
            ("ID", "ID"),
            ("Name", "NAME"),
            ("Image", "IMAGE"),
            ("Node", "NODE"),
            ("DesiredState", "DESIRED STATE"),
            ("CurrentState", "CURRENT STATE"),
            ("Error", "ERROR"),
            ("Ports", "PORTS"),
        ]);
        let row = |id: &str, name: &str, ago: &str| {
            json!({"ID": id, "Name": name, "Image": "myimage:mytag", "Node": "defaultNodeName",
                   "DesiredState": "Ready", "CurrentState": format!("Ready {ago} ago"),
                   "Error": "\"a task error\"", "Ports": ""})
        };
        let rows = vec![
            row("taskID1", "failure.1", "2 hours"),
            row("taskID2", " \\_ failure.1", "3 hours"),
        ];
        let want = "\
ID        NAME            IMAGE           NODE              DESIRED STATE   CURRENT STATE       ERROR            PORTS
taskID1   failure.1       myimage:mytag   defaultNodeName   Ready           Ready 2 hours ago   \"a task error\"   
taskID2    \\_ failure.1   myimage:mytag   defaultNodeName   Ready           Ready 3 hours ago   \"a task error\"   
";
        assert_eq!(render(&fmt, &hdr, &rows).unwrap(), want);
    }

    #[test]
    fn non_table_formats_have_no_header() {
        let hdr = header(&[("ID", "ID")]);
        let rows = vec![
            json!({"ID": "a", "Name": "x"}),
            json!({"ID": "b", "Name": "y"}),
        ];
        assert_eq!(
            render(&Format::new("{{.ID}}"), &hdr, &rows).unwrap(),
            "a\nb\n"
        );
        assert_eq!(
            render(&Format::new("{{.ID}}\\t{{.Name}}"), &hdr, &rows).unwrap(),
            "a\tx\nb\ty\n"
        );
        assert_eq!(
            render(&Format::new("json"), &hdr, &rows[..1]).unwrap(),
            "{\"ID\":\"a\",\"Name\":\"x\"}\n"
        );
        // an empty table still prints its header
        assert_eq!(
            render(&Format::new("table {{.ID}}"), &hdr, &[]).unwrap(),
            "ID\n"
        );
    }

    #[test]
    fn go_time_pretty_matches_docker() {
        let t = DateTime::parse_from_rfc3339("2009-11-10T23:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(go_time_pretty(Some(t)), "2009-11-10 23:00:00 +0000 utc");
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.120Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(go_time_pretty(Some(t)), "2024-01-02 03:04:05.12 +0000 utc");
    }
}
