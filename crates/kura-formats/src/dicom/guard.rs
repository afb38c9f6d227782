//! A structural check of a DICOM Part 10 file before the parser sees it.
//!
//! The parser allocates a value's buffer from the length its header declares, before reading
//! it: a 1 KiB upload that declares a 4 GiB element aborts the process. It also builds nested
//! sequences by recursion, so a file nested a hundred thousand levels deep overflows the stack.
//! This walk reads only headers and checks that every declared length fits inside the file
//! (and inside its enclosing item or sequence) and that nesting stays shallow, so that the
//! parser only ever meets lengths bounded by the upload size.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::FormatError;

/// Sequences nest a few levels in real files; 32 is far beyond any IOD and far below what
/// would strain the parser's stack.
const MAX_NESTING: usize = 32;

const PREAMBLE_AND_MAGIC: usize = 132;
const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIMITER: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_DELIMITER: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
const DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1.99";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    ExplicitLittle,
    ImplicitLittle,
    ExplicitBig,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ContainerKind {
    Sequence,
    Item,
    /// Encapsulated pixel data: its items are compressed fragments, not data sets.
    PixelFragments,
}

#[derive(Clone, Copy)]
struct Container {
    kind: ContainerKind,
    /// Where a defined-length container ends; `None` until its delimiter.
    end: Option<usize>,
    /// How the elements inside are encoded (an undefined-length UN holds implicit VR).
    encoding: Encoding,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Where the element being read starts; errors name it.
    element_start: usize,
}

impl Reader<'_> {
    fn malformed(&self, what: &str) -> FormatError {
        FormatError::Malformed(format!("DICOM: {what} (element at byte {})", self.element_start))
    }

    fn take(&mut self, n: usize) -> Result<&[u8], FormatError> {
        let end = self.pos.checked_add(n).filter(|end| *end <= self.bytes.len());
        let Some(slice) = end.and_then(|end| self.bytes.get(self.pos..end)) else {
            return Err(self.malformed("the file ends inside an element header"));
        };
        self.pos += n;
        Ok(slice)
    }

    fn u16(&mut self, encoding: Encoding) -> Result<u16, FormatError> {
        let raw: [u8; 2] = self.take(2)?.try_into().map_err(|_| self.malformed("short read"))?;
        Ok(if encoding == Encoding::ExplicitBig { u16::from_be_bytes(raw) } else { u16::from_le_bytes(raw) })
    }

    fn u32(&mut self, encoding: Encoding) -> Result<u32, FormatError> {
        let raw: [u8; 4] = self.take(4)?.try_into().map_err(|_| self.malformed("short read"))?;
        Ok(if encoding == Encoding::ExplicitBig { u32::from_be_bytes(raw) } else { u32::from_le_bytes(raw) })
    }

    fn tag(&mut self, encoding: Encoding) -> Result<(u16, u16), FormatError> {
        Ok((self.u16(encoding)?, self.u16(encoding)?))
    }

    /// An explicit VR and its length; VRs with a 4-byte length have 2 reserved bytes first.
    fn explicit_vr_and_length(&mut self, encoding: Encoding) -> Result<(Option<VR>, u32), FormatError> {
        let raw: [u8; 2] = self.take(2)?.try_into().map_err(|_| self.malformed("short read"))?;
        let Some(vr) = VR::from_binary(raw) else { return Err(self.malformed("an unknown value representation")) };
        let long = matches!(
            vr,
            VR::OB
                | VR::OD
                | VR::OF
                | VR::OL
                | VR::OV
                | VR::OW
                | VR::SQ
                | VR::SV
                | VR::UC
                | VR::UN
                | VR::UR
                | VR::UT
                | VR::UV
        );
        if long {
            self.take(2)?;
            Ok((Some(vr), self.u32(encoding)?))
        } else {
            Ok((Some(vr), u32::from(self.u16(encoding)?)))
        }
    }

    /// Skips a value of `len` bytes that must end by `limit`.
    fn skip(&mut self, len: u32, limit: usize) -> Result<(), FormatError> {
        let end = usize::try_from(len).ok().and_then(|len| self.pos.checked_add(len));
        match end {
            Some(end) if end <= limit => {
                self.pos = end;
                Ok(())
            }
            _ => Err(self.malformed("a value longer than the data around it")),
        }
    }
}

/// Checks the file's structure; returns nothing but whether the parser may be given it.
pub fn check(bytes: &[u8]) -> Result<(), FormatError> {
    if bytes.get(128..PREAMBLE_AND_MAGIC) != Some(b"DICM".as_slice()) {
        return Err(FormatError::Malformed("not a DICOM Part 10 file: no DICM marker at byte 128".into()));
    }
    let mut reader = Reader { bytes, pos: PREAMBLE_AND_MAGIC, element_start: PREAMBLE_AND_MAGIC };
    let transfer_syntax = read_meta_group(&mut reader)?;
    let encoding = match transfer_syntax.as_str() {
        IMPLICIT_VR_LITTLE_ENDIAN => Encoding::ImplicitLittle,
        EXPLICIT_VR_BIG_ENDIAN => Encoding::ExplicitBig,
        // Compressed data sets cannot be checked without inflating them, and a small deflated
        // upload can inflate to gigabytes.
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN => {
            return Err(FormatError::Unsupported("deflated DICOM data sets are not accepted".into()));
        }
        _ => Encoding::ExplicitLittle,
    };
    walk_data_set(&mut reader, encoding)
}

/// Walks the file meta group (always explicit VR little endian) and returns the transfer
/// syntax UID.
fn read_meta_group(reader: &mut Reader) -> Result<String, FormatError> {
    let mut transfer_syntax = None;
    loop {
        let start = reader.pos;
        reader.element_start = start;
        let group_ahead =
            reader.bytes.get(start..start + 2).and_then(|g| <[u8; 2]>::try_from(g).ok()).map(u16::from_le_bytes);
        if group_ahead != Some(0x0002) {
            break;
        }
        let tag = reader.tag(Encoding::ExplicitLittle)?;
        let (_, len) = reader.explicit_vr_and_length(Encoding::ExplicitLittle)?;
        let value_start = reader.pos;
        reader.skip(len, reader.bytes.len())?;
        if tag == (0x0002, 0x0010) {
            let raw = reader.bytes.get(value_start..reader.pos).unwrap_or_default();
            let uid = String::from_utf8_lossy(raw).trim_end_matches(['\0', ' ']).to_owned();
            transfer_syntax = Some(uid);
        }
    }
    transfer_syntax.ok_or_else(|| FormatError::Malformed("DICOM: the file meta group has no transfer syntax".into()))
}

fn is_sequence_in_dictionary(tag: (u16, u16)) -> bool {
    StandardDataDictionary.by_tag(Tag(tag.0, tag.1)).is_some_and(|entry| matches!(entry.vr(), VirtualVr::Exact(VR::SQ)))
}

fn walk_data_set(reader: &mut Reader, data_set_encoding: Encoding) -> Result<(), FormatError> {
    let file_end = reader.bytes.len();
    let mut open: Vec<Container> = Vec::new();
    loop {
        reader.element_start = reader.pos;
        // Close the defined-length containers that end here.
        while let Some(top) = open.last() {
            match top.end {
                Some(end) if end == reader.pos => {
                    open.pop();
                }
                Some(end) if end < reader.pos => return Err(reader.malformed("an element that overruns its sequence")),
                _ => break,
            }
        }
        if reader.pos == file_end {
            return if open.is_empty() {
                Ok(())
            } else {
                Err(FormatError::Malformed("DICOM: the file ends inside a sequence".into()))
            };
        }
        if open.iter().filter(|c| c.kind != ContainerKind::Item).count() > MAX_NESTING {
            return Err(FormatError::Unsupported(format!("DICOM sequences nested deeper than {MAX_NESTING} levels")));
        }
        let limit = open.iter().filter_map(|c| c.end).min().unwrap_or(file_end);
        let encoding = open.last().map_or(data_set_encoding, |c| c.encoding);
        let inside = open.last().map(|c| c.kind);
        let tag = reader.tag(encoding)?;

        if tag.0 == 0xFFFE {
            let len = reader.u32(encoding)?;
            match (tag, inside) {
                (ITEM, Some(ContainerKind::PixelFragments)) => reader.skip(len, limit)?,
                (ITEM, Some(ContainerKind::Sequence)) => {
                    let end = defined_end(reader, len, limit)?;
                    open.push(Container { kind: ContainerKind::Item, end, encoding });
                }
                (ITEM_DELIMITER, Some(ContainerKind::Item)) if open.last().is_some_and(|c| c.end.is_none()) => {
                    open.pop();
                }
                (SEQUENCE_DELIMITER, Some(ContainerKind::Sequence | ContainerKind::PixelFragments))
                    if open.last().is_some_and(|c| c.end.is_none()) =>
                {
                    open.pop();
                }
                _ => return Err(reader.malformed("an item or delimiter out of place")),
            }
            continue;
        }
        if inside == Some(ContainerKind::PixelFragments) || inside == Some(ContainerKind::Sequence) {
            return Err(reader.malformed("an element outside of an item"));
        }

        let (vr, len) = match encoding {
            Encoding::ImplicitLittle => (None, reader.u32(encoding)?),
            _ => reader.explicit_vr_and_length(encoding)?,
        };
        let is_sequence = vr == Some(VR::SQ) || (vr.is_none() && is_sequence_in_dictionary(tag));
        if len == UNDEFINED_LENGTH {
            let container = if tag == PIXEL_DATA {
                Container { kind: ContainerKind::PixelFragments, end: None, encoding }
            } else if is_sequence || vr.is_none() {
                Container { kind: ContainerKind::Sequence, end: None, encoding }
            } else if vr == Some(VR::UN) {
                Container { kind: ContainerKind::Sequence, end: None, encoding: Encoding::ImplicitLittle }
            } else {
                return Err(reader.malformed("an undefined length on an element that is not a sequence"));
            };
            open.push(container);
        } else if is_sequence {
            let end = defined_end(reader, len, limit)?;
            open.push(Container { kind: ContainerKind::Sequence, end, encoding });
        } else {
            reader.skip(len, limit)?;
        }
    }
}

/// The end of a container of declared length `len`, checked against `limit`.
fn defined_end(reader: &Reader, len: u32, limit: usize) -> Result<Option<usize>, FormatError> {
    if len == UNDEFINED_LENGTH {
        return Ok(None);
    }
    let end = usize::try_from(len).ok().and_then(|len| reader.pos.checked_add(len));
    match end {
        Some(end) if end <= limit => Ok(Some(end)),
        _ => Err(reader.malformed("a sequence longer than the data around it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Part 10 file with the given transfer syntax and data set bytes.
    fn file(transfer_syntax: &str, data_set: &[u8]) -> Vec<u8> {
        let mut uid = transfer_syntax.as_bytes().to_vec();
        if uid.len() % 2 == 1 {
            uid.push(0);
        }
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        out.extend_from_slice(&[0x02, 0x00, 0x10, 0x00, b'U', b'I']);
        out.extend_from_slice(&u16::try_from(uid.len()).unwrap().to_le_bytes());
        out.extend_from_slice(&uid);
        out.extend_from_slice(data_set);
        out
    }

    /// An explicit VR little endian element with a 2-byte length.
    fn short(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = [group.to_le_bytes(), element.to_le_bytes()].concat();
        out.extend_from_slice(vr);
        out.extend_from_slice(&u16::try_from(value.len()).unwrap().to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    /// An explicit VR little endian element with a 4-byte length (declared, not actual).
    fn long(group: u16, element: u16, vr: &[u8; 2], len: u32, value: &[u8]) -> Vec<u8> {
        let mut out = [group.to_le_bytes(), element.to_le_bytes()].concat();
        out.extend_from_slice(vr);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn item(len: u32) -> Vec<u8> {
        [0xFFFEu16.to_le_bytes(), 0xE000u16.to_le_bytes()].concat().into_iter().chain(len.to_le_bytes()).collect()
    }

    fn delimiter(element: u16) -> Vec<u8> {
        [0xFFFEu16.to_le_bytes(), element.to_le_bytes(), [0, 0], [0, 0]].concat()
    }

    const EXPLICIT: &str = "1.2.840.10008.1.2.1";

    fn nested(depth: usize) -> Vec<u8> {
        let mut data = Vec::new();
        for _ in 0..depth {
            data.extend(long(0x0008, 0x1115, b"SQ", UNDEFINED_LENGTH, &item(UNDEFINED_LENGTH)));
        }
        data.extend(short(0x0010, 0x0010, b"PN", b"DOE^JO"));
        for _ in 0..depth {
            data.extend(delimiter(0xE00D));
            data.extend(delimiter(0xE0DD));
        }
        data
    }

    #[test]
    fn structure_checks() {
        let check = |bytes: Vec<u8>, expected: Result<(), &str>| {
            assert_eq!(check(&bytes).map_err(|e| e.to_string()), expected.map_err(str::to_owned));
        };
        // The data set starts at byte 160, after the preamble, the magic and the meta group.
        let name = short(0x0010, 0x0010, b"PN", b"DOE^JO");
        check(file(EXPLICIT, &name), Ok(()));
        check(file(EXPLICIT, &[]), Ok(()));
        check(vec![0; 100], Err("malformed content: not a DICOM Part 10 file: no DICM marker at byte 128"));
        check(
            file(EXPLICIT, &long(0x0010, 0x0010, b"UT", 0xFFFF_FFF0, b"abcd")),
            Err("malformed content: DICOM: a value longer than the data around it (element at byte 160)"),
        );
        check(
            file(EXPLICIT, &name[..name.len() - 1]),
            Err("malformed content: DICOM: a value longer than the data around it (element at byte 160)"),
        );
        check(
            file(EXPLICIT, &name[..5]),
            Err("malformed content: DICOM: the file ends inside an element header (element at byte 160)"),
        );
        check(
            file(EXPLICIT, &short(0x0010, 0x0010, b"ZZ", b"")),
            Err("malformed content: DICOM: an unknown value representation (element at byte 160)"),
        );
        check(file(EXPLICIT, &nested(3)), Ok(()));
        check(file(EXPLICIT, &nested(MAX_NESTING)), Ok(()));
        check(
            file(EXPLICIT, &nested(MAX_NESTING + 1)),
            Err("unsupported: DICOM sequences nested deeper than 32 levels"),
        );
        let unclosed = long(0x0008, 0x1115, b"SQ", UNDEFINED_LENGTH, &item(UNDEFINED_LENGTH));
        check(file(EXPLICIT, &unclosed), Err("malformed content: DICOM: the file ends inside a sequence"));
        // A defined-length item that claims more than its sequence holds.
        let mut overrun = long(0x0008, 0x1115, b"SQ", 8, &item(100));
        overrun.extend(name.clone());
        check(
            file(EXPLICIT, &overrun),
            Err("malformed content: DICOM: a sequence longer than the data around it (element at byte 172)"),
        );
        check(
            file(EXPLICIT, &delimiter(0xE00D)),
            Err("malformed content: DICOM: an item or delimiter out of place (element at byte 160)"),
        );
        // Encapsulated pixel data: fragments are skipped, not walked.
        let mut pixels = long(0x7FE0, 0x0010, b"OB", UNDEFINED_LENGTH, &item(0));
        pixels.extend(item(4));
        pixels.extend([0xFF, 0xD8, 0xFF, 0xE0]);
        pixels.extend(delimiter(0xE0DD));
        check(file("1.2.840.10008.1.2.4.50", &pixels), Ok(()));
        check(
            file(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, &[]),
            Err("unsupported: deflated DICOM data sets are not accepted"),
        );
        // Implicit VR: lengths are 4 bytes and sequences are known from the dictionary.
        let implicit = [0x10u16.to_le_bytes(), 0x10u16.to_le_bytes()].concat();
        let mut ok = implicit.clone();
        ok.extend(6u32.to_le_bytes());
        ok.extend(b"DOE^JO");
        check(file(IMPLICIT_VR_LITTLE_ENDIAN, &ok), Ok(()));
        let mut huge = implicit;
        huge.extend(0x7FFF_FFFFu32.to_le_bytes());
        // The shorter transfer syntax UID puts this data set at byte 158.
        check(
            file(IMPLICIT_VR_LITTLE_ENDIAN, &huge),
            Err("malformed content: DICOM: a value longer than the data around it (element at byte 158)"),
        );
    }
}
