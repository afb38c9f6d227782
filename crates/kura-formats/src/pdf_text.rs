//! The text of a PDF, read only to find labels in it (`terms.rs`): the strings that content
//! streams show (`Tj`, `TJ`, `'`, `"`) and the document's Title, Subject and Keywords.
//!
//! This is a scanner, not a PDF reader: it walks `stream ... endstream` sections in file order
//! without resolving objects, page trees or fonts. Strings are decoded as text strings are
//! (UTF-16BE or UTF-8 after their byte order mark, else UTF-8 if valid, else byte by byte), so
//! text shown through simple fonts with standard encodings comes out right, and glyph ids of
//! composite fonts come out as noise that matches nothing. Nothing here fails: what cannot be
//! read is skipped.
//!
//! Memory is bounded: inflated stream data counts against [`INFLATE_LIMIT`] over the whole
//! document (one stream's data is held at a time; past the limit no more compressed streams are
//! read), and the text collected stops at [`TEXT_LIMIT`].

use std::borrow::Cow;

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

/// How much FlateDecode data may inflate to, over all streams of one document.
pub const INFLATE_LIMIT: usize = 16 << 20;

/// How much text is collected; a longer document is matched on its first part.
pub const TEXT_LIMIT: usize = 4 << 20;

/// The document information entries read, wherever they appear (the Info dictionary, an object
/// stream holding it, outline items).
const INFO_KEYS: [&[u8]; 3] = [b"/Title", b"/Subject", b"/Keywords"];

/// Names in a stream's dictionary that mark data without text operators: images, embedded font
/// programs, cross-reference tables, XMP metadata and attached files. Reading them would only
/// spend the inflate budget.
const STREAMS_WITHOUT_TEXT: [&[u8]; 12] = [
    b"/Image",
    b"/XRef",
    b"/Metadata",
    b"/EmbeddedFile",
    b"/Length1",
    b"/Length2",
    b"/Length3",
    b"/Type1C",
    b"/CIDFontType0C",
    b"/OpenType",
    b"/DCTDecode",
    b"/JPXDecode",
];

/// The text of a PDF, with pieces separated by spaces; empty when it has none that can be read.
pub fn extract_text(pdf: &[u8]) -> String {
    let mut text = Text::default();
    collect_info(pdf, &mut text);
    let mut budget = INFLATE_LIMIT;
    let mut from = 0;
    while !text.is_full() {
        let Some(stream) = next_stream(pdf, from) else { break };
        from = stream.next;
        if STREAMS_WITHOUT_TEXT.iter().any(|name| has_name(stream.dict, name)) {
            continue;
        }
        let data: Cow<[u8]> = match filter_of(stream.dict) {
            Filter::None => Cow::Borrowed(stream.data),
            // Past the budget, compressed streams are skipped; plain ones are still read.
            Filter::Flate => {
                if budget == 0 {
                    continue;
                }
                let inflated = inflate(stream.data, budget);
                budget = budget.saturating_sub(inflated.len());
                Cow::Owned(inflated)
            }
            Filter::Unsupported => continue,
        };
        show_text(&data, &mut text);
        if has_name(stream.dict, b"/ObjStm") {
            collect_info(&data, &mut text);
        }
    }
    text.out
}

/// Collected text, bounded by [`TEXT_LIMIT`].
#[derive(Default)]
struct Text {
    out: String,
    full: bool,
}

impl Text {
    fn is_full(&self) -> bool {
        self.full
    }

    /// Adds a decoded string; control characters become spaces so that they cannot join or
    /// split words.
    fn push(&mut self, piece: &str) {
        for c in piece.chars() {
            if self.out.len() + c.len_utf8() > TEXT_LIMIT {
                self.full = true;
                return;
            }
            self.out.push(if c.is_control() { ' ' } else { c });
        }
    }

    /// A word boundary: between lines, text objects and document entries.
    fn space(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with(' ') {
            self.push(" ");
        }
    }
}

/// One `stream ... endstream` section.
struct RawStream<'a> {
    /// The bytes between the object header (`12 0 obj`) and the `stream` keyword.
    dict: &'a [u8],
    data: &'a [u8],
    /// Where to look for the next stream.
    next: usize,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).rposition(|window| window == needle)
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, 0 | b'\t' | b'\n' | 0x0C | b'\r' | b' ')
}

fn is_delimiter(b: u8) -> bool {
    matches!(b, b'(' | b')' | b'<' | b'>' | b'[' | b']' | b'{' | b'}' | b'/' | b'%')
}

fn is_regular(b: u8) -> bool {
    !is_whitespace(b) && !is_delimiter(b)
}

fn skip_whitespace(data: &[u8], mut at: usize) -> usize {
    while data.get(at).is_some_and(|b| is_whitespace(*b)) {
        at += 1;
    }
    at
}

/// Finds the next stream at or after `from`. Its end is taken from a direct `/Length` when
/// that lands on `endstream`, else from the next `endstream` (or the end of the file, for a
/// truncated one).
fn next_stream(pdf: &[u8], from: usize) -> Option<RawStream<'_>> {
    let mut at = from;
    loop {
        let keyword = at + find(pdf.get(at..)?, b"stream")?;
        let after = keyword + b"stream".len();
        at = after;
        if keyword >= 3 && pdf.get(keyword - 3..keyword) == Some(b"end".as_slice()) {
            continue;
        }
        let data_start = match (pdf.get(after), pdf.get(after + 1)) {
            (Some(b'\r'), Some(b'\n')) => after + 2,
            (Some(b'\n' | b'\r'), _) => after + 1,
            _ => continue,
        };
        let head = pdf.get(from..keyword).unwrap_or_default();
        let dict_start = rfind(head, b"obj").map_or(from, |i| from + i + 3);
        let dict = pdf.get(dict_start..keyword).unwrap_or_default();
        let declared_end = direct_length(dict)
            .and_then(|length| data_start.checked_add(length))
            .filter(|&end| pdf.get(skip_whitespace(pdf, end)..).is_some_and(|rest| rest.starts_with(b"endstream")));
        let (data_end, next) = match declared_end {
            Some(end) => (end, end),
            None => match pdf.get(data_start..).and_then(|rest| find(rest, b"endstream")) {
                Some(i) => {
                    let end = data_start + i;
                    (end, end + b"endstream".len())
                }
                None => (pdf.len(), pdf.len()),
            },
        };
        let data = pdf.get(data_start..data_end).unwrap_or_default();
        return Some(RawStream { dict, data, next });
    }
}

/// Whether a dictionary holds the name (`/Image`, not `/ImageB`).
fn has_name(dict: &[u8], name: &[u8]) -> bool {
    let mut at = 0;
    while let Some(i) = dict.get(at..).and_then(|rest| find(rest, name)) {
        let end = at + i + name.len();
        if !dict.get(end).is_some_and(|b| is_regular(*b)) {
            return true;
        }
        at = end;
    }
    false
}

/// The value of `/Length` when it is a direct integer (not `12 0 R`).
fn direct_length(dict: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(i) = dict.get(at..).and_then(|rest| find(rest, b"/Length")) {
        let end = at + i + b"/Length".len();
        at = end;
        if dict.get(end).is_some_and(|b| is_regular(*b)) {
            continue;
        }
        let start = skip_whitespace(dict, end);
        let digits = dict.get(start..)?.iter().take_while(|b| b.is_ascii_digit()).count();
        let number = std::str::from_utf8(dict.get(start..start + digits)?).ok()?.parse().ok()?;
        let after = skip_whitespace(dict, start + digits);
        // `12 0 R` is a reference, whose value is elsewhere.
        return (!dict.get(after).is_some_and(u8::is_ascii_digit)).then_some(number);
    }
    None
}

enum Filter {
    None,
    Flate,
    Unsupported,
}

/// The stream's filters: none, FlateDecode alone, or anything else (which is not read).
fn filter_of(dict: &[u8]) -> Filter {
    let Some(i) = find(dict, b"/Filter") else { return Filter::None };
    let mut at = skip_whitespace(dict, i + b"/Filter".len());
    let mut names = Vec::new();
    let in_array = dict.get(at) == Some(&b'[');
    if in_array {
        at += 1;
    }
    loop {
        at = skip_whitespace(dict, at);
        if dict.get(at) != Some(&b'/') {
            break;
        }
        let length = dict.get(at + 1..).unwrap_or_default().iter().take_while(|b| is_regular(**b)).count();
        names.push(dict.get(at + 1..at + 1 + length).unwrap_or_default());
        at += 1 + length;
        if !in_array {
            break;
        }
    }
    match names.as_slice() {
        [] => Filter::None,
        [b"FlateDecode" | b"Fl"] => Filter::Flate,
        _ => Filter::Unsupported,
    }
}

/// Inflates zlib data to at most `limit` bytes. A damaged or truncated stream gives what was
/// inflated before the damage; checksums are not checked (writers get them wrong, and the text
/// is only searched).
fn inflate(data: &[u8], limit: usize) -> Vec<u8> {
    let flags = inflate_flags::TINFL_FLAG_PARSE_ZLIB_HEADER
        | inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF
        | inflate_flags::TINFL_FLAG_IGNORE_ADLER32;
    if limit == 0 {
        return Vec::new();
    }
    let mut decompressor = Box::<DecompressorOxide>::default();
    let mut out = vec![0; data.len().saturating_mul(4).max(4096).min(limit)];
    let mut input = data;
    let mut out_pos = 0;
    loop {
        let (status, consumed, produced) = decompress(&mut decompressor, input, &mut out, out_pos, flags);
        out_pos = out_pos.saturating_add(produced).min(out.len());
        input = input.get(consumed..).unwrap_or_default();
        if status == TINFLStatus::HasMoreOutput && out.len() < limit {
            out.resize(out.len().saturating_mul(2).min(limit), 0);
            continue;
        }
        out.truncate(out_pos);
        return out;
    }
}

/// Decodes a PDF string's bytes as text.
pub fn decode_text(bytes: &[u8]) -> String {
    if let Some(utf16) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        let units = utf16.chunks(2).map(|pair| match pair {
            [high, low] => u16::from_be_bytes([*high, *low]),
            _ => 0xFFFD,
        });
        return char::decode_utf16(units).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)).collect();
    }
    if let Some(utf8) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8_lossy(utf8).into_owned();
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        // PDFDocEncoding agrees with Latin-1 on the letters that matter here.
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// A literal string's bytes, from just after its `(`; returns them and where reading stopped.
/// An unterminated string runs to the end of the data.
fn literal_string(data: &[u8], start: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut at = start;
    while let Some(&b) = data.get(at) {
        at += 1;
        match b {
            b'\\' => {
                let Some(&escaped) = data.get(at) else { break };
                at += 1;
                match escaped {
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0C),
                    b'0'..=b'7' => {
                        let mut value = u32::from(escaped - b'0');
                        for _ in 0..2 {
                            match data.get(at) {
                                Some(digit @ b'0'..=b'7') => {
                                    value = value * 8 + u32::from(digit - b'0');
                                    at += 1;
                                }
                                _ => break,
                            }
                        }
                        out.push(u8::try_from(value & 0xFF).unwrap_or(0));
                    }
                    // A backslash at the end of a line continues the string on the next.
                    b'\r' => {
                        if data.get(at) == Some(&b'\n') {
                            at += 1;
                        }
                    }
                    b'\n' => {}
                    // `\(`, `\)`, `\\`, and unknown escapes, whose backslash is ignored.
                    other => out.push(other),
                }
            }
            b'(' => {
                depth += 1;
                out.push(b);
            }
            b')' => {
                if depth == 0 {
                    return (out, at);
                }
                depth -= 1;
                out.push(b);
            }
            _ => out.push(b),
        }
    }
    (out, at)
}

/// A hex string's bytes, from just after its `<`; `None` if it holds anything but hex digits
/// and whitespace or is unterminated. An odd last digit counts as followed by 0.
fn hex_string(data: &[u8], start: usize) -> (Option<Vec<u8>>, usize) {
    let mut out = Vec::new();
    let mut high: Option<u8> = None;
    let mut valid = true;
    let mut at = start;
    while let Some(&b) = data.get(at) {
        at += 1;
        if b == b'>' {
            if let Some(h) = high {
                out.push(h << 4);
            }
            return (valid.then_some(out), at);
        }
        if is_whitespace(b) {
            continue;
        }
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => {
                valid = false;
                continue;
            }
        };
        match high.take() {
            Some(h) => out.push(h << 4 | digit),
            None => high = Some(digit),
        }
    }
    (None, at)
}

/// The Title, Subject and Keywords entries found in `data`.
fn collect_info(data: &[u8], text: &mut Text) {
    for key in INFO_KEYS {
        let mut at = 0;
        while let Some(i) = data.get(at..).and_then(|rest| find(rest, key)) {
            let end = at + i + key.len();
            at = end;
            if text.is_full() {
                return;
            }
            if data.get(end).is_some_and(|b| is_regular(*b)) {
                continue;
            }
            let value = skip_whitespace(data, end);
            let string = match (data.get(value), data.get(value + 1)) {
                (Some(b'('), _) => {
                    let (bytes, next) = literal_string(data, value + 1);
                    at = next;
                    Some(bytes)
                }
                (Some(b'<'), next) if next != Some(&b'<') => {
                    let (bytes, next) = hex_string(data, value + 1);
                    at = next;
                    bytes
                }
                _ => None,
            };
            if let Some(bytes) = string {
                text.space();
                text.push(&decode_text(&bytes));
                text.space();
            }
        }
    }
}

/// An operand of a content stream operator, as far as showing text needs it.
enum Operand {
    String(Vec<u8>),
    /// An array (a `TJ` operand), already read as the text it shows.
    Array(String),
    Other,
}

/// How many operands are kept before an operator; text operators take at most three.
const MAX_OPERANDS: usize = 32;
/// A `TJ` adjustment (thousandths of a text space unit) below which the gap reads as a space.
const WORD_GAP: f64 = -200.0;

/// An array being read: the text its strings show, and how deeply arrays nest in it.
struct OpenArray {
    text: String,
    depth: usize,
}

impl OpenArray {
    /// Adds a string, or a space for a wide gap; an array shows no more text than a document
    /// may hold.
    fn push(&mut self, piece: &str) {
        let mut end = piece.len().min(TEXT_LIMIT.saturating_sub(self.text.len()));
        while !piece.is_char_boundary(end) {
            end -= 1;
        }
        self.text.push_str(piece.get(..end).unwrap_or_default());
    }
}

/// Collects the strings shown by the text operators of a content stream. Operands are kept as
/// little as the operators need: the last few, and arrays as the text they would show, so that
/// what is held stays within the size of the stream.
fn show_text(content: &[u8], text: &mut Text) {
    let mut operands: Vec<Operand> = Vec::new();
    let mut array: Option<OpenArray> = None;
    let mut at = 0;
    while let Some(&b) = content.get(at) {
        if text.is_full() {
            return;
        }
        let operand = match b {
            _ if is_whitespace(b) => {
                at += 1;
                continue;
            }
            b'%' => {
                while content.get(at).is_some_and(|c| !matches!(c, b'\r' | b'\n')) {
                    at += 1;
                }
                continue;
            }
            b'(' => {
                let (bytes, next) = literal_string(content, at + 1);
                at = next;
                Operand::String(bytes)
            }
            b'<' if content.get(at + 1) == Some(&b'<') => {
                at += 2;
                Operand::Other
            }
            b'<' => {
                let (bytes, next) = hex_string(content, at + 1);
                at = next;
                bytes.map_or(Operand::Other, Operand::String)
            }
            b'[' => {
                at += 1;
                match array.as_mut() {
                    Some(open) => open.depth += 1,
                    None => array = Some(OpenArray { text: String::new(), depth: 0 }),
                }
                continue;
            }
            b']' => {
                at += 1;
                match array.take() {
                    Some(OpenArray { text, depth: 0 }) => Operand::Array(text),
                    Some(mut open) => {
                        open.depth -= 1;
                        array = Some(open);
                        continue;
                    }
                    None => continue,
                }
            }
            b'/' => {
                at += 1;
                while content.get(at).is_some_and(|c| is_regular(*c)) {
                    at += 1;
                }
                Operand::Other
            }
            _ if is_delimiter(b) => {
                at += 1;
                continue;
            }
            _ => {
                let start = at;
                while content.get(at).is_some_and(|c| is_regular(*c)) {
                    at += 1;
                }
                let token = content.get(start..at).unwrap_or_default();
                let is_number = !token.is_empty()
                    && token.iter().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+'))
                    && token.iter().any(u8::is_ascii_digit);
                if is_number {
                    let gap = std::str::from_utf8(token).ok().and_then(|t| t.parse::<f64>().ok());
                    if let (Some(open), Some(gap)) = (array.as_mut(), gap)
                        && gap < WORD_GAP
                    {
                        open.push(" ");
                    }
                    Operand::Other
                } else {
                    // An operator inside an array is malformed content: the array is dropped.
                    if array.take().is_none() {
                        at = operator(token, &operands, content, at, text);
                    }
                    operands.clear();
                    continue;
                }
            }
        };
        match (array.as_mut(), operand) {
            (Some(open), Operand::String(bytes)) => open.push(&decode_text(&bytes)),
            (Some(_), _) => {}
            (None, operand) => {
                if operands.len() >= MAX_OPERANDS {
                    operands.drain(..MAX_OPERANDS / 2);
                }
                operands.push(operand);
            }
        }
    }
}

/// Applies a content stream operator; returns where reading goes on (after the data of an
/// inline image).
fn operator(token: &[u8], operands: &[Operand], content: &[u8], at: usize, text: &mut Text) -> usize {
    let shown = |text: &mut Text| {
        if let Some(Operand::String(bytes)) = operands.last() {
            text.push(&decode_text(bytes));
        }
    };
    match token {
        b"Tj" => shown(text),
        b"'" | b"\"" => {
            text.space();
            shown(text);
        }
        b"TJ" => {
            if let Some(Operand::Array(shown)) = operands.last() {
                text.push(shown);
            }
        }
        b"Td" | b"TD" | b"Tm" | b"T*" | b"BT" | b"ET" => text.space(),
        // An inline image's data is binary and runs to `EI` between whitespace.
        b"ID" => return end_of_inline_image(content, at),
        _ => {}
    }
    at
}

fn end_of_inline_image(content: &[u8], from: usize) -> usize {
    let mut at = from;
    while let Some(i) = content.get(at..).and_then(|rest| find(rest, b"EI")) {
        let start = at + i;
        let end = start + 2;
        let before_ok = start == 0 || content.get(start - 1).is_some_and(|b| is_whitespace(*b));
        let after_ok = content.get(end).is_none_or(|b| is_whitespace(*b));
        if before_ok && after_ok {
            return end;
        }
        at = end;
    }
    content.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_decode_as_text_strings() {
        let check = |bytes: &[u8], expected: &str| assert_eq!(decode_text(bytes), expected, "{bytes:?}");
        check(b"Diabetes", "Diabetes");
        check(&[0xFE, 0xFF, 0x7C, 0xD6, 0x5C, 0x3F, 0x75, 0xC5], "糖尿病");
        check(&[0xFE, 0xFF, 0x00, 0x41, 0x00], "A\u{FFFD}");
        check(&[0xFE, 0xFF, 0xD8, 0x00], "\u{FFFD}");
        check(&[0xEF, 0xBB, 0xBF, 0xE9, 0xAB, 0x98], "高");
        check("喘息".as_bytes(), "喘息");
        check(&[0x4D, 0xE9, 0x6E], "Mén");
        check(b"", "");
    }

    #[test]
    fn literal_and_hex_strings() {
        let literal = |raw: &[u8], expected: &[u8], stop: usize| {
            assert_eq!(literal_string(raw, 0), (expected.to_vec(), stop), "{}", String::from_utf8_lossy(raw));
        };
        literal(b"abc) rest", b"abc", 4);
        literal(b"a(b)c) rest", b"a(b)c", 6);
        literal(br"a\)b\\c\(d)", br"a)b\c(d", 11);
        literal(br"\101\60x\7)", b"A0x\x07", 11);
        literal(b"a\\\nb)", b"ab", 5);
        literal(br"\n\t\q)", b"\n\tq", 7);
        literal(b"open (never closed", b"open (never closed", 18);
        literal(b"ends in \\", b"ends in ", 9);
        let hex = |raw: &[u8], expected: Option<&[u8]>| {
            assert_eq!(hex_string(raw, 0).0.as_deref(), expected, "{}", String::from_utf8_lossy(raw));
        };
        hex(b"48 65 6c6C6f>", Some(b"Hello"));
        hex(b"414>", Some(b"A@"));
        hex(b">", Some(b""));
        hex(b"4G>", None);
        hex(b"4142", None);
    }

    #[test]
    fn text_operators_show_their_strings() {
        let check = |content: &str, expected: &str| {
            let mut text = Text::default();
            show_text(content.as_bytes(), &mut text);
            assert_eq!(text.out, expected, "{content}");
        };
        check("BT /F1 12 Tf 72 712 Td (Type 2 diabetes) Tj ET", "Type 2 diabetes ");
        check("BT [(Hyper) 20 (tension) -300 (noted)] TJ ET", "Hypertension noted ");
        check("BT (first) Tj (line) ' 1 2 (third) \" ET", "first line third ");
        check("BT <FEFF7CD65C3F75C5> Tj ET", "糖尿病 ");
        check("BT (a) Tj 0 -14 Td (b) Tj T* (c) Tj ET", "a b c ");
        // Operands that are not strings, operators with missing operands, comments.
        check("BT 12 Tj [1 2] TJ Tj TJ % (hidden) Tj\n(shown) Tj ET", "shown ");
        // Marked content, dictionaries and inline images are stepped over.
        check("/Span <</ActualText (x)>> BDC (y) Tj EMC", "y");
        check("BI /W 2 /H 1 ID \x00(no) TjEI\x01 EI (after) Tj", "after");
        // Unbalanced brackets and stray delimiters do not stop the scan.
        check("] ] ) } { [ [ (in) ] TJ (out) Tj", "out");
        check("[[[[[[[[[[[[ (deep) Tj", "");
        check("[(a) [(b) 1] -500 [[(c)]] ] TJ", "ab c");
        check("[(a) -500.5.5 (b) +-1 (c) -900 (d) 0.] TJ", "abc d");
        // An operator inside an array drops the array.
        check("[(a) -1e9 (b)] TJ (c) Tj", "c");
        check("(unterminated Tj", "");
    }

    #[test]
    fn text_stops_at_its_limit() {
        let check = |show: &str| {
            let mut pdf = b"%PDF-1.4\n1 0 obj <<>>\nstream\n".to_vec();
            pdf.extend_from_slice(show.replace('*', &"a".repeat(TEXT_LIMIT + 10)).as_bytes());
            pdf.extend_from_slice(b" (asthma) Tj\nendstream\nendobj\n%%EOF");
            let text = extract_text(&pdf);
            assert!(text.len() <= TEXT_LIMIT && text.len() > TEXT_LIMIT - 10, "{show}: {}", text.len());
            assert!(!text.contains("asthma"), "{show}");
        };
        check("(*) Tj");
        check("[(*)] TJ");
        check("[(*) (*)] TJ");
    }

    #[test]
    fn stream_dictionaries() {
        let check = |dict: &[u8], filter: &str, length: Option<usize>| {
            let got = match filter_of(dict) {
                Filter::None => "none",
                Filter::Flate => "flate",
                Filter::Unsupported => "unsupported",
            };
            assert_eq!((got, direct_length(dict)), (filter, length), "{}", String::from_utf8_lossy(dict));
        };
        check(b"<< /Length 44 >>", "none", Some(44));
        check(b"<</Length 44/Filter/FlateDecode>>", "flate", Some(44));
        check(b"<< /Filter [ /FlateDecode ] /Length 7 0 R >>", "flate", None);
        check(b"<< /Filter [/ASCII85Decode /FlateDecode] >>", "unsupported", None);
        check(b"<< /Filter /DCTDecode /Length1 5 /Length 9 >>", "unsupported", Some(9));
        check(b"<< /Filter [] >>", "none", None);
        check(b"<< /Length", "none", None);
        assert!(has_name(b"<< /Subtype /Image >>", b"/Image"));
        assert!(has_name(b"<</Subtype/Image/Width 2>>", b"/Image"));
        assert!(!has_name(b"<< /ProcSet [/ImageB] >>", b"/Image"));
    }

    #[test]
    fn inflation_is_bounded() {
        let check = |data: &[u8], limit: usize, expected_len: usize| {
            assert_eq!(inflate(data, limit).len(), expected_len, "limit {limit}");
        };
        let zeros = miniz_oxide::deflate::compress_to_vec_zlib(&[0; 100_000], 9);
        check(&zeros, 1 << 20, 100_000);
        check(&zeros, 1000, 1000);
        check(&zeros, 1, 1);
        // Damaged data gives what came before the damage, garbage nothing.
        let text = miniz_oxide::deflate::compress_to_vec_zlib(b"(asthma) Tj", 6);
        check(&text, 1 << 20, 11);
        check(text.get(..text.len() - 4).unwrap(), 1 << 20, 11);
        let cut_short = inflate(text.get(..4).unwrap(), 1 << 20);
        assert!(b"(asthma) Tj".starts_with(&cut_short), "{cut_short:?}");
        check(b"not zlib at all", 1 << 20, 0);
        check(b"", 1 << 20, 0);
    }
}
