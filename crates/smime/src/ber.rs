//! A minimal BER tag-length-value walker.
//!
//! The `der` crate decodes BER into typed values but forgets the exact bytes a
//! sender wrote. Two things need those bytes: the signed attributes of a
//! `SignerInfo` (RFC 5652 §5.4: the signature covers the sender's own encoding,
//! which may be an unsorted SET) and a constructed, chunked `eContent` OCTET
//! STRING (RustCrypto/formats#1888). This module walks the raw encoding, definite
//! or indefinite length, and hands back slices of the input.

use crate::error::Malformed;

/// Deepest nesting accepted; real CMS stays far below this, fuzzed input does not.
const MAX_DEPTH: usize = 64;

/// One element: where its header starts, where its contents start and end, and
/// where the whole element (including any end-of-contents octets) ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tlv {
    /// First identifier octet (class, constructed bit, low tag number).
    pub tag: u8,
    /// Offset of the first identifier octet.
    pub start: usize,
    /// Offset of the first contents octet.
    pub content_start: usize,
    /// Offset one past the last contents octet (before end-of-contents, if any).
    pub content_end: usize,
    /// Offset one past the whole element.
    pub end: usize,
}

impl Tlv {
    /// Whether the constructed bit is set.
    pub fn constructed(&self) -> bool {
        self.tag & 0x20 != 0
    }
}

/// Read the element starting at `pos` in `buf`.
pub(crate) fn read(buf: &[u8], pos: usize) -> Result<Tlv, Malformed> {
    read_depth(buf, pos, 0)
}

fn read_depth(buf: &[u8], pos: usize, depth: usize) -> Result<Tlv, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed("ASN.1 nesting too deep"));
    }
    let tag = *buf.get(pos).ok_or(Malformed("truncated ASN.1 tag"))?;
    let mut p = pos + 1;
    if tag & 0x1f == 0x1f {
        // High tag number form: skip the continuation octets.
        loop {
            let b = *buf.get(p).ok_or(Malformed("truncated ASN.1 tag"))?;
            p += 1;
            if b & 0x80 == 0 {
                break;
            }
            if p - pos > 6 {
                return Err(Malformed("ASN.1 tag too long"));
            }
        }
    }
    let first = *buf.get(p).ok_or(Malformed("truncated ASN.1 length"))?;
    p += 1;
    if first == 0x80 {
        // Indefinite length (BER only): children until the end-of-contents octets.
        if tag & 0x20 == 0 {
            return Err(Malformed("indefinite length on a primitive ASN.1 value"));
        }
        let content_start = p;
        let mut q = p;
        loop {
            if buf.get(q..q + 2) == Some(&[0, 0]) {
                return Ok(Tlv {
                    tag,
                    start: pos,
                    content_start,
                    content_end: q,
                    end: q + 2,
                });
            }
            let child = read_depth(buf, q, depth + 1)?;
            q = child.end;
        }
    }
    let len = if first & 0x80 == 0 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n > 4 {
            return Err(Malformed("ASN.1 length too large"));
        }
        let mut len = 0usize;
        for _ in 0..n {
            let b = *buf.get(p).ok_or(Malformed("truncated ASN.1 length"))?;
            p += 1;
            len = (len << 8) | usize::from(b);
        }
        len
    };
    let end = p
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or(Malformed("ASN.1 value runs past the end of the input"))?;
    Ok(Tlv {
        tag,
        start: pos,
        content_start: p,
        content_end: end,
        end,
    })
}

/// The children of a constructed element.
pub(crate) fn children(buf: &[u8], parent: &Tlv) -> Result<Vec<Tlv>, Malformed> {
    if !parent.constructed() {
        return Err(Malformed("expected a constructed ASN.1 value"));
    }
    let mut out = Vec::new();
    let mut p = parent.content_start;
    while p < parent.content_end {
        let child = read(buf, p)?;
        if child.end > parent.content_end {
            return Err(Malformed("ASN.1 child runs past its parent"));
        }
        p = child.end;
        out.push(child);
    }
    Ok(out)
}

/// The contents of an OCTET STRING (or an implicitly tagged one), joining the
/// chunks of a constructed encoding.
pub(crate) fn octets(buf: &[u8], tlv: &Tlv) -> Result<Vec<u8>, Malformed> {
    let mut out = Vec::new();
    collect_octets(buf, tlv, &mut out, 0)?;
    Ok(out)
}

/// Like [`octets`], but borrows the contents of a primitive (single-chunk)
/// encoding instead of copying: the encrypted content of a large message.
pub(crate) fn octets_cow<'a>(
    buf: &'a [u8],
    tlv: &Tlv,
) -> Result<std::borrow::Cow<'a, [u8]>, Malformed> {
    if tlv.constructed() {
        return octets(buf, tlv).map(std::borrow::Cow::Owned);
    }
    Ok(std::borrow::Cow::Borrowed(
        buf.get(tlv.content_start..tlv.content_end)
            .unwrap_or_default(),
    ))
}

fn collect_octets(buf: &[u8], tlv: &Tlv, out: &mut Vec<u8>, depth: usize) -> Result<(), Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed("ASN.1 nesting too deep"));
    }
    if tlv.constructed() {
        for child in children(buf, tlv)? {
            collect_octets(buf, &child, out, depth + 1)?;
        }
    } else {
        out.extend_from_slice(
            buf.get(tlv.content_start..tlv.content_end)
                .unwrap_or_default(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_lengths_and_chunks_are_walked() {
        // SEQUENCE (indefinite) { [0] constructed (indefinite) { OCTET STRING "ab", OCTET STRING "c" } }
        let buf = [
            0x30, 0x80, 0xa0, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0, 0, 0, 0,
        ];
        let outer = read(&buf, 0).unwrap();
        assert_eq!(outer.end, buf.len());
        let kids = children(&buf, &outer).unwrap();
        assert_eq!(kids.len(), 1);
        assert_eq!(octets(&buf, &kids[0]).unwrap(), b"abc");
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(read(&[0x30, 0x85, 1], 0).is_err());
        assert!(read(&[0x30, 0x80, 0x04], 0).is_err());
        assert!(read(&[0x30, 0x05, 0x04], 0).is_err());
        assert!(read(&[], 0).is_err());
    }
}
