//! Docker-style resource limits, parsed without I/O.

/// Memory such as `512m`, `1g`, `1.5g`, `256k` or plain bytes, to bytes.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("invalid memory {s:?}: want e.g. 512m, 1g or bytes"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("invalid memory {s:?}: must be positive"));
    }
    Ok((v * mult as f64) as u64)
}

/// CPUs such as `0.5`, `2` (CPUs) or `500m` (millicores), to millicores.
pub fn parse_cpus(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let bad = || format!("invalid cpus {s:?}: want e.g. 0.5, 2 or 500m");
    let millis = match t.strip_suffix('m') {
        Some(m) => m.parse::<f64>().map_err(|_| bad())?,
        None => t.parse::<f64>().map_err(|_| bad())? * 1000.0,
    };
    if !millis.is_finite() || millis < 1.0 {
        return Err(format!("invalid cpus {s:?}: at least 1m"));
    }
    Ok(millis as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("1.5G"), Ok(3 << 29));
        assert_eq!(parse_memory("64kb"), Ok(64 << 10));
        assert_eq!(parse_memory("1000"), Ok(1000));
        for bad in ["", "x", "-1g", "0", "1q"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus("500m"), Ok(500));
        assert_eq!(parse_cpus("2"), Ok(2000));
        for bad in ["", "m", "abc", "0", "0.0001", "-1"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }
}
