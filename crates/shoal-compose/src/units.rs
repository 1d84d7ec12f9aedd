//! Docker's unit parsers, shared by the CLI's flags and compose files: Go's
//! `time.ParseDuration`, docker/go-units' `RAMInBytes`, and the docker CLI's CPU counts, with
//! their error texts.

/// Go's `time.ParseDuration` ("1h30m", "1.5s", "300ms", "-2m", "0"), in nanoseconds.
pub fn parse_go_duration(input: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration \"{input}\"");
    let mut s = input;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let num = &s[..num_end];
        if num.is_empty() || num == "." {
            return Err(invalid());
        }
        let value: f64 = num.parse().map_err(|_| invalid())?;
        s = &s[num_end..];
        let unit_end = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit = &s[..unit_end];
        if unit.is_empty() {
            return Err(format!("time: missing unit in duration \"{input}\""));
        }
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => {
                return Err(format!(
                    "time: unknown unit \"{unit}\" in duration \"{input}\""
                ))
            }
        };
        total += value * scale;
        s = &s[unit_end..];
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let total = total.round() as i64;
    Ok(if neg { -total } else { total })
}

/// docker/go-units `RAMInBytes` ("512m", "1g", "1.5GiB", "100").
pub fn ram_in_bytes(input: &str) -> Result<i64, String> {
    let sep = input
        .rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')
        .ok_or_else(|| format!("invalid size: '{input}'"))?;
    let (num, sfx) = if input.as_bytes()[sep] == b' ' {
        (&input[..sep], &input[sep + 1..])
    } else {
        (&input[..=sep], &input[sep + 1..])
    };
    let size: f64 = num
        .parse()
        .map_err(|_| format!("strconv.ParseFloat: parsing \"{num}\": invalid syntax"))?;
    if size < 0.0 {
        return Err(format!("invalid size: '{input}'"));
    }
    if sfx.is_empty() {
        return Ok(size as i64);
    }
    let bad = || format!("invalid suffix: '{sfx}'");
    if sfx.len() > 3 {
        return Err(bad());
    }
    let lower = sfx.to_lowercase();
    let bytes = lower.as_bytes();
    if bytes[0] == b'b' {
        return if bytes.len() > 1 {
            Err(bad())
        } else {
            Ok(size as i64)
        };
    }
    let mul: f64 = match bytes[0] {
        b'k' => 1024.0,
        b'm' => 1024.0 * 1024.0,
        b'g' => 1024.0 * 1024.0 * 1024.0,
        b't' => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        b'p' => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    match bytes.len() {
        2 if bytes[1] != b'b' => return Err(bad()),
        3 if &lower[1..] != "ib" => return Err(bad()),
        _ => {}
    }
    Ok((size * mul) as i64)
}

/// A `--limit-cpu`/`--reserve-cpu` value ("0.5", "2") in nano CPUs.
pub fn nano_cpus(s: &str) -> Result<i64, String> {
    let bad = || format!("failed to parse {s} as a rational number");
    let t = s.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() > 9 {
        return Err("value is too precise".to_string());
    }
    let int_v: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac_v: i64 = if frac_trimmed.is_empty() {
        0
    } else {
        format!("{frac_trimmed:0<9}").parse().map_err(|_| bad())?
    };
    let v = int_v
        .checked_mul(1_000_000_000)
        .and_then(|v| v.checked_add(frac_v))
        .ok_or_else(bad)?;
    Ok(if neg { -v } else { v })
}
