//! An allocation-free, non-recursive CBOR well-formedness scanner
//! (RFC 8949 §5.3.1 and Appendix C).
//!
//! [`item_len`] finds where the first data item of a buffer ends without
//! interpreting it. The codec runs it before handing a payload to ciborium so
//! that structural problems (truncation, reserved encodings, excessive
//! nesting, several items in one frame) are classified precisely and never
//! depend on how ciborium happens to walk the input.

use super::codec::CBOR_RECURSION_LIMIT;
use core::fmt;

/// Why a buffer does not start with a well-formed CBOR data item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// The buffer ends inside the item (this includes an empty buffer).
    Truncated,
    /// Additional information 28–30, or an indefinite length on a major
    /// type that has none (integers, tags).
    Reserved,
    /// A "break" outside an indefinite-length item, or an odd number of
    /// data items in an indefinite-length map.
    BadBreak,
    /// A chunk of an indefinite-length string that is not a definite-length
    /// string of the same major type.
    BadChunk,
    /// A two-byte simple value below 32.
    BadSimple,
    /// Arrays, maps and tags nest deeper than [`CBOR_RECURSION_LIMIT`].
    TooDeep,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScanError::Truncated => "truncated data item",
            ScanError::Reserved => "reserved or invalid additional information",
            ScanError::BadBreak => "misplaced break",
            ScanError::BadChunk => "invalid chunk in an indefinite-length string",
            ScanError::BadSimple => "two-byte simple value below 32",
            ScanError::TooDeep => "nesting exceeds the recursion limit",
        })
    }
}

/// An open (not yet complete) data item on the scanner's stack.
#[derive(Clone, Copy)]
enum Open {
    /// Definite-length array, map or a tag: data items still to come.
    Items(u64),
    /// Indefinite-length array or map; `odd` tracks the parity of the
    /// items seen so far (a map needs an even count).
    Indefinite { map: bool, odd: bool },
    /// Indefinite-length byte (2) or text (3) string.
    Chunks(u8),
}

/// Depth of the scanner's stack: nesting is bounded by the limit, and an
/// indefinite-length string (which holds no containers) needs one more slot.
const STACK: usize = CBOR_RECURSION_LIMIT + 1;

/// Length in bytes of the first CBOR data item of `buf`.
///
/// Arrays, maps and tags may nest at most [`CBOR_RECURSION_LIMIT`] deep.
/// Text strings are not checked for valid UTF-8 (ciborium does that when it
/// reads them). Runs in time linear in the number of data item heads, with
/// a fixed-size stack and no allocation.
pub(crate) fn item_len(buf: &[u8]) -> Result<usize, ScanError> {
    let mut stack = [Open::Items(0); STACK];
    let mut top = 0usize; // entries in use
    let mut nesting = 0usize; // arrays, maps and tags among them
    let mut pos = 0usize;

    loop {
        let initial = *buf.get(pos).ok_or(ScanError::Truncated)?;
        pos += 1;
        let major = initial >> 5;
        let info = initial & 0x1f;

        if let Some(Open::Chunks(m)) = top.checked_sub(1).map(|i| stack[i]) {
            if initial == 0xff {
                top -= 1; // the whole string is complete
                if let Some(done) = complete(&mut stack, &mut top, &mut nesting, pos) {
                    return Ok(done);
                }
                continue;
            }
            if major != m || info == 31 {
                return Err(ScanError::BadChunk);
            }
        }

        let arg: u64 = match info {
            0..=23 => u64::from(info),
            24 => u64::from(read::<1>(buf, &mut pos)?[0]),
            25 => u64::from(u16::from_be_bytes(read::<2>(buf, &mut pos)?)),
            26 => u64::from(u32::from_be_bytes(read::<4>(buf, &mut pos)?)),
            27 => u64::from_be_bytes(read::<8>(buf, &mut pos)?),
            28..=30 => return Err(ScanError::Reserved),
            _ => {
                // Indefinite length (31).
                match major {
                    2 | 3 => {
                        stack[top] = Open::Chunks(major);
                        top += 1;
                        continue;
                    }
                    4 | 5 => {
                        if nesting == CBOR_RECURSION_LIMIT {
                            return Err(ScanError::TooDeep);
                        }
                        stack[top] = Open::Indefinite {
                            map: major == 5,
                            odd: false,
                        };
                        top += 1;
                        nesting += 1;
                        continue;
                    }
                    7 => {
                        // Break: closes the innermost indefinite-length container.
                        match top.checked_sub(1).map(|i| stack[i]) {
                            Some(Open::Indefinite { map, odd }) if !(map && odd) => {
                                top -= 1;
                                nesting -= 1;
                                if let Some(done) =
                                    complete(&mut stack, &mut top, &mut nesting, pos)
                                {
                                    return Ok(done);
                                }
                                continue;
                            }
                            _ => return Err(ScanError::BadBreak),
                        }
                    }
                    _ => return Err(ScanError::Reserved),
                }
            }
        };

        match major {
            2 | 3 => {
                let rest = (buf.len() - pos) as u64;
                if arg > rest {
                    return Err(ScanError::Truncated);
                }
                pos += arg as usize; // arg <= rest, which fits in usize
            }
            4..=6 => {
                let items = match major {
                    4 => arg,
                    5 => arg.checked_mul(2).ok_or(ScanError::Truncated)?,
                    _ => 1,
                };
                if items > 0 {
                    // Every data item takes at least one byte: reject lying
                    // counts at once.
                    if items > (buf.len() - pos) as u64 {
                        return Err(ScanError::Truncated);
                    }
                    if nesting == CBOR_RECURSION_LIMIT {
                        return Err(ScanError::TooDeep);
                    }
                    stack[top] = Open::Items(items);
                    top += 1;
                    nesting += 1;
                    continue;
                }
            }
            7 if info == 24 && arg < 32 => return Err(ScanError::BadSimple),
            _ => {} // integers, simple values, floats
        }

        if let Some(done) = complete(&mut stack, &mut top, &mut nesting, pos) {
            return Ok(done);
        }
    }
}

/// Records that one data item ended at `pos`, closing every definite-length
/// container it completes. Returns `Some(pos)` when the outermost item is
/// complete.
#[inline]
fn complete(
    stack: &mut [Open; STACK],
    top: &mut usize,
    nesting: &mut usize,
    pos: usize,
) -> Option<usize> {
    loop {
        let Some(i) = top.checked_sub(1) else {
            return Some(pos);
        };
        match &mut stack[i] {
            Open::Items(n) => {
                *n -= 1;
                if *n > 0 {
                    return None;
                }
                *top -= 1;
                *nesting -= 1;
            }
            Open::Indefinite { odd, .. } => {
                *odd = !*odd;
                return None;
            }
            Open::Chunks(_) => return None,
        }
    }
}

/// Reads the `N`-byte argument that follows an initial byte.
#[inline]
fn read<const N: usize>(buf: &[u8], pos: &mut usize) -> Result<[u8; N], ScanError> {
    let bytes = buf
        .get(*pos..*pos + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(ScanError::Truncated)?;
    *pos += N;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::test;

    use crate::wire::testutil::unhex as decode_hex;

    fn len(hex: &str) -> Result<usize, ScanError> {
        item_len(&decode_hex(hex))
    }

    #[test]
    fn well_formed_items() {
        // Examples from RFC 8949 Appendix A.
        for hex in [
            "00",
            "17",
            "1818",
            "1903e8",
            "1a000f4240",
            "1b000000e8d4a51000",
            "20",
            "3903e7",
            "f4",
            "f5",
            "f6",
            "f7",
            "f820",
            "f93c00",
            "fa47c35000",
            "fb3ff199999999999a",
            "40",
            "4401020304",
            "60",
            "6449455446",
            "80",
            "83010203",
            "8301820203820405",
            "a0",
            "a201020304",
            "a26161016162820203",
            "c074323031332d30332d32315432303a30343a30305a",
            "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
            "5f42010243030405ff",
            "7f657374726561646d696e67ff",
            "9fff",
            "9f018202039f0405ffff",
            "bf61610161629f0203ffff",
            "826161bf61626163ff",
            "bf6346756ef563416d7421ff",
            "5fff",
        ] {
            let bytes = decode_hex(hex);
            assert_eq!(item_len(&bytes), Ok(bytes.len()), "{hex}");
        }
    }

    #[test]
    fn first_item_only() {
        assert_eq!(len("01 02"), Ok(1));
        assert_eq!(len("6470696e67 f6"), Ok(5));
        assert_eq!(len("a1 6470696e67 f6 00"), Ok(7));
    }

    #[test]
    fn ill_formed_items() {
        use ScanError::*;
        for (hex, err) in [
            ("", Truncated),
            ("18", Truncated),
            ("1a0000", Truncated),
            ("62 61", Truncated),
            ("81", Truncated),
            ("a1 01", Truncated),
            ("9f 01", Truncated),
            ("5a ffffffff 00", Truncated),
            ("9b ffffffffffffffff 00", Truncated),
            ("bb ffffffffffffffff 00", Truncated),
            ("1c", Reserved),
            ("1f", Reserved),
            ("3f", Reserved),
            ("df", Reserved),
            ("fc", Reserved),
            ("ff", BadBreak),
            ("81 ff", BadBreak),
            ("bf 01 ff", BadBreak),
            ("5f 61 61 ff", BadChunk),
            ("5f 5f ff ff", BadChunk),
            ("7f 01 ff", BadChunk),
            ("f8 1f", BadSimple),
        ] {
            assert_eq!(len(hex), Err(err), "{hex}");
        }
    }

    #[test]
    fn nesting_limit() {
        let mut ok = vec![0x81u8; CBOR_RECURSION_LIMIT - 1];
        ok.push(0x80); // an empty array is complete at once
        assert_eq!(item_len(&ok), Ok(ok.len()));
        let mut ok = vec![0x81u8; CBOR_RECURSION_LIMIT];
        ok.push(0x00);
        assert_eq!(item_len(&ok), Ok(ok.len()));
        let mut deep = vec![0x81u8; CBOR_RECURSION_LIMIT + 1];
        deep.push(0x00);
        assert_eq!(item_len(&deep), Err(ScanError::TooDeep));
        let mut tags = vec![0xc6u8; CBOR_RECURSION_LIMIT + 1];
        tags.push(0x00);
        assert_eq!(item_len(&tags), Err(ScanError::TooDeep));
        let mut indef = vec![0x9fu8; CBOR_RECURSION_LIMIT + 1];
        indef.extend(vec![0xffu8; CBOR_RECURSION_LIMIT + 1]);
        assert_eq!(item_len(&indef), Err(ScanError::TooDeep));
        // An indefinite-length string at the deepest level is fine.
        let mut s = vec![0x81u8; CBOR_RECURSION_LIMIT];
        s.extend([0x5f, 0x41, 0x00, 0xff]);
        assert_eq!(item_len(&s), Ok(s.len()));
    }
}
