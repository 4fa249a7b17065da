//! Time spans as Fail2Ban writes them: `600`, `10m`, `1h`, `1d12h`,
//! `1w 2d`, `3mo`, `1y`, `-1` (forever, for `bantime`).

/// Seconds in Fail2Ban's units (a month is 30.4375 days, a year 365.25).
fn unit_seconds(unit: &str) -> Option<f64> {
    Some(match unit {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "mi" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        "w" | "wk" | "week" | "weeks" => 7.0 * 86400.0,
        "mo" | "mon" | "month" | "months" => 30.4375 * 86400.0,
        "y" | "yr" | "year" | "years" => 365.25 * 86400.0,
        _ => return None,
    })
}

/// Parses a time span into seconds. Negative values are allowed (`-1`).
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let t = text.trim().to_lowercase();
    if t.is_empty() {
        return Err("empty time value".into());
    }
    let (neg, body) = match t.strip_prefix('-') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, t.as_str()),
    };
    let mut total = 0.0;
    let mut rest = body;
    let mut parts = 0;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "{text:?} is not a time span (use e.g. 600, 10m, 1h, 1d12h)"
            ));
        }
        let num: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("{text:?}: bad number {:?}", &rest[..num_len]))?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let mult =
            unit_seconds(unit).ok_or_else(|| format!("{text:?}: unknown time unit {unit:?}"))?;
        total += num * mult;
        rest = &rest[unit_len..];
        parts += 1;
    }
    if parts == 0 {
        return Err(format!("{text:?} is not a time span"));
    }
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(parse_seconds("600").unwrap(), 600.0);
        assert_eq!(parse_seconds("10m").unwrap(), 600.0);
        assert_eq!(parse_seconds("1h").unwrap(), 3600.0);
        assert_eq!(parse_seconds("1d12h").unwrap(), 129600.0);
        assert_eq!(parse_seconds("1w 2d").unwrap(), 9.0 * 86400.0);
        assert_eq!(parse_seconds("-1").unwrap(), -1.0);
        assert_eq!(parse_seconds(" 90s ").unwrap(), 90.0);
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("10x").is_err());
        assert!(parse_seconds("").is_err());
    }
}
