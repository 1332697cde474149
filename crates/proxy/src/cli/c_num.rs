//! C's number parsing as the C proxy applies it to option values: `strtol`-style
//! prefixes, `atoi`, `atof` (decimal notation) and `parse_memory_limit` with its k/m/g/t
//! suffixes. Garbage gives what C gives (usually 0), never a panic.

pub(super) fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// C `strtol`-style prefix: leading white space, an optional sign, at least one digit.
/// Returns the value (saturated far outside the i64 range) and the bytes consumed.
pub(super) fn c_int_prefix(s: &[u8]) -> Option<(i128, usize)> {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let mut neg = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        neg = s[i] == b'-';
        i += 1;
    }
    let digits_start = i;
    let mut v: i128 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        v = (v * 10 + i128::from(s[i] - b'0')).min(1 << 80);
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    Some((if neg { -v } else { v }, i))
}

/// C `atoi`: the leading integer, 0 for garbage; saturates instead of overflowing.
pub(super) fn atoi(s: &[u8]) -> i32 {
    match c_int_prefix(s) {
        Some((v, _)) => v.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32,
        None => 0,
    }
}

/// C `atof` restricted to decimal notation: the longest leading decimal number, 0.0 otherwise.
pub(super) fn atof(s: &[u8]) -> f64 {
    let mut i = 0;
    while i < s.len() && is_c_space(s[i]) {
        i += 1;
    }
    let start = i;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        i += 1;
    }
    let mut digits = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return 0.0;
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        let mut k = i + 1;
        if k < s.len() && (s[k] == b'+' || s[k] == b'-') {
            k += 1;
        }
        if k < s.len() && s[k].is_ascii_digit() {
            while k < s.len() && s[k].is_ascii_digit() {
                k += 1;
            }
            i = k;
        }
    }
    std::str::from_utf8(&s[start..i])
        .ok()
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// `parse_memory_limit` (common/server-functions.c): `sscanf("%lld%c")` plus a k/m/g/t suffix.
pub(super) fn parse_memory_limit(s: &[u8]) -> Result<u64, String> {
    let Some((v, used)) = c_int_prefix(s) else {
        return Err(
            "Parsing limit for option fail: expected a number with an optional k/m/g/t suffix"
                .into(),
        );
    };
    let shift = match s.get(used).map(|c| c | 0x20) {
        None | Some(b' ') => 0,
        Some(b'k') => 10,
        Some(b'm') => 20,
        Some(b'g') => 30,
        Some(b't') => 40,
        Some(_) => {
            let ch = String::from_utf8_lossy(&s[used..])
                .chars()
                .next()
                .unwrap_or('?');
            return Err(format!(
                "Parsing limit fail. Unknown suffix '{ch}' (expected k, m, g or t)"
            ));
        }
    };
    if v < 0 {
        return Err("Parsing limit fail. The size must not be negative".into());
    }
    match u64::try_from(v << shift) {
        Ok(n) if n <= i64::MAX as u64 => Ok(n),
        _ => Err("Parsing limit fail. The size is too large".into()),
    }
}
