//! Which request paths the gateway forwards: only those no upstream could
//! resolve to somewhere other than where the gateway routed them.
//!
//! The gateway routes on the path as sent; an upstream may decode it first.
//! So a path is refused when, under any decoding a server commonly applies,
//! it holds a dot segment (`.` or `..`), an empty segment, a backslash, or
//! an encoded separator. The decodings tried, alone and stacked:
//! percent-decoding (once and twice: `%252e` is `.` to a server that
//! decodes twice), IIS's `%uXXXX`, overlong UTF-8 (`%c0%ae` is `.` to a
//! lenient decoder), and Servlet path parameters (`..;x` is `..` to Tomcat
//! and Spring). Dots inside a segment (`v1.2`, `a..b`) are fine.

/// Why a path is refused, for the client's 400.
pub fn check_request_path(path: &str) -> Result<(), String> {
    let refuse = || {
        Err(format!(
            "path `{}` has dot segments, empty segments or encoded separators (under some decoding an upstream may apply)",
            path.escape_default()
        ))
    };
    if path.contains("//") || path.contains('\\') {
        return refuse();
    }
    // Without a `%` there is nothing to decode (the common case, kept free
    // of allocations).
    if !path.contains('%') {
        return if has_dot_segment(path.as_bytes()) {
            refuse()
        } else {
            Ok(())
        };
    }
    let once = decode(path.as_bytes());
    let twice = decode(&once);
    // An encoded `/` or `\` (at any depth) is a separator to some servers
    // and a name character to others.
    let encoded_separator = [&once, &twice]
        .iter()
        .any(|d| d.contains(&b'\\') || has_extra_slashes(d, path));
    if encoded_separator {
        return refuse();
    }
    for form in [path.as_bytes(), &once, &twice] {
        if has_dot_segment(form) {
            return refuse();
        }
    }
    Ok(())
}

/// Whether decoding produced a `/` the raw path did not have.
fn has_extra_slashes(decoded: &[u8], raw: &str) -> bool {
    decoded.iter().filter(|b| **b == b'/').count() != raw.bytes().filter(|b| *b == b'/').count()
}

/// Whether a segment is `.` or `..` once Servlet path parameters (`;...`)
/// are dropped, or is empty past the first.
fn has_dot_segment(path: &[u8]) -> bool {
    path.split(|b| *b == b'/' || *b == b'\\')
        .map(|segment| segment.split(|b| *b == b';').next().unwrap_or_default())
        .any(|segment| segment == b"." || segment == b"..")
}

/// One round of the decodings servers apply: `%XX`, `%uXXXX`, then
/// overlong UTF-8 of ASCII read as the ASCII byte.
fn decode(input: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        match rest {
            [b'%', b'u' | b'U', a, b, c, d, ..] => match (hex(*a), hex(*b), hex(*c), hex(*d)) {
                (Some(a), Some(b), Some(c), Some(d)) => {
                    let code = a << 12 | b << 8 | c << 4 | d;
                    let ch = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                    out.extend_from_slice(ch.to_string().as_bytes());
                    i += 6;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            [b'%', a, b, ..] if hex(*a).is_some() && hex(*b).is_some() => {
                out.push((hex(*a).unwrap_or(0) << 4 | hex(*b).unwrap_or(0)) as u8);
                i += 3;
            }
            _ => {
                out.push(rest[0]);
                i += 1;
            }
        }
    }
    read_overlong_ascii(&out)
}

/// Replaces overlong UTF-8 encodings of ASCII (`C0 AE`, `E0 80 AE` for `.`)
/// by the byte they spell.
fn read_overlong_ascii(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let cont = |b: u8| b & 0xC0 == 0x80;
        match bytes[i..] {
            [lead @ (0xC0 | 0xC1), b, ..] if cont(b) => {
                out.push(((lead & 0x1F) << 6) | (b & 0x3F));
                i += 2;
            }
            [0xE0, b, c, ..] if cont(b) && cont(c) && b < 0xA0 => {
                let code = (u32::from(b & 0x3F) << 6) | u32::from(c & 0x3F);
                match u8::try_from(code) {
                    Ok(ascii) if ascii < 0x80 => out.push(ascii),
                    _ => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_under_any_common_decoding_are_refused() {
        for p in [
            "/a/mcp/../admin",
            "/a/mcp/./x",
            "/a/mcp/..",
            "/a/mcp/%2e%2e/admin",
            "/a/mcp/%2E./admin",
            "/a/mcp/..;/admin",
            "/a/mcp/..;jsessionid=1/admin",
            "/a/mcp/.;x/admin",
            "/a/mcp/%252e%252e/admin",
            "/a/mcp/%25%32%65%25%32%65/admin",
            "/a/mcp/%c0%ae%c0%ae/admin",
            "/a/mcp/%e0%80%ae%e0%80%ae/admin",
            "/a/mcp/%u002e%u002e/admin",
            "/a/mcp/%U002E./admin",
        ] {
            assert!(check_request_path(p).is_err(), "{p}");
        }
    }

    #[test]
    fn separators_empty_segments_and_their_encodings_are_refused() {
        for p in [
            "/a/mcp//x",
            "/a/mcp\\x",
            "/a/mcp/%2f/x",
            "/a/mcp%2Fadmin",
            "/a/mcp/%5cx",
            "/a/mcp/%252fx",
            "/a/mcp/%c0%afx",
            "/a/mcp/%u002fx",
        ] {
            assert!(check_request_path(p).is_err(), "{p}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "/a/mcp",
            "/a/mcp/x.y/z",
            "/a/mcp/v1..2",
            "/a/mcp/.well-known",
            "/a/mcp/%20space",
            "/a/mcp/caf%C3%A9",
            "/a/mcp/x;v=1",
        ] {
            assert_eq!(check_request_path(p), Ok(()), "{p}");
        }
    }
}
