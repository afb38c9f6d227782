//! Labels from the text of PDF documents: small PDFs written here (plain and FlateDecode
//! content streams, UTF-16BE strings, document information), and broken, truncated and
//! decompression-bomb PDFs that must upload (or be refused) without a panic and within the
//! inflate budget.

use kura_core::record::RecordFormat;
use kura_core::time::Timestamp;
use kura_formats::{FormatError, IngestContext, parse_upload};
use miniz_oxide::deflate::compress_to_vec_zlib;
use proptest::prelude::*;

/// What every PDF upload is labelled with.
const BASE: [&str; 4] = ["category:document", "format:pdf", "institution:org-aoba", "type:DocumentReference"];

fn ctx() -> IngestContext<'static> {
    IngestContext { institution: "org-aoba", now: Timestamp::from_millis(0), document_category: None }
}

/// How a stream's data is written.
#[derive(Clone, Copy)]
enum Encoding {
    Plain,
    Flate,
}

/// A stream object: its dictionary entries (besides `/Length` and `/Filter`) and data.
fn stream_object(number: u32, extra: &str, data: &[u8], encoding: Encoding) -> Vec<u8> {
    let (data, filter) = match encoding {
        Encoding::Plain => (data.to_vec(), ""),
        Encoding::Flate => (compress_to_vec_zlib(data, 6), " /Filter /FlateDecode"),
    };
    let mut out = format!("{number} 0 obj\n<< /Length {}{filter}{extra} >>\nstream\n", data.len()).into_bytes();
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\nendstream\nendobj\n");
    out
}

/// A PDF with one page per content stream, and an Info dictionary when given.
fn pdf(contents: &[(&[u8], Encoding)], info: Option<&[u8]>) -> Vec<u8> {
    let mut out = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec();
    out.extend_from_slice(b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n");
    let kids: Vec<String> = (0..contents.len()).map(|i| format!("{} 0 R", 10 + 2 * i)).collect();
    out.extend_from_slice(
        format!("2 0 obj\n<< /Type /Pages /Kids [{}] /Count {} >>\nendobj\n", kids.join(" "), contents.len())
            .as_bytes(),
    );
    out.extend_from_slice(b"3 0 obj\n<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>\nendobj\n");
    for (i, (content, encoding)) in contents.iter().enumerate() {
        let page = 10 + 2 * u32::try_from(i).unwrap();
        out.extend_from_slice(
            format!(
                "{page} 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {} 0 R \
                 /Resources << /Font << /F1 3 0 R >> >> >>\nendobj\n",
                page + 1
            )
            .as_bytes(),
        );
        out.extend(stream_object(page + 1, "", content, *encoding));
    }
    if let Some(info) = info {
        out.extend_from_slice(b"4 0 obj\n");
        out.extend_from_slice(info);
        out.extend_from_slice(b"\nendobj\n");
    }
    out.extend_from_slice(b"trailer\n<< /Root 1 0 R /Info 4 0 R >>\n%%EOF\n");
    out
}

fn labels_of(bytes: &[u8]) -> Result<Vec<String>, FormatError> {
    let parsed = parse_upload(RecordFormat::Pdf, bytes, &ctx())?;
    assert!(parsed.values.is_empty());
    Ok(parsed.labels.iter().map(ToString::to_string).collect())
}

/// The labels beyond [`BASE`], which every accepted PDF has.
fn extra_labels(bytes: &[u8]) -> Vec<String> {
    let labels = labels_of(bytes).unwrap();
    for base in BASE {
        assert!(labels.contains(&base.to_owned()), "{base}");
    }
    labels.into_iter().filter(|l| !BASE.contains(&l.as_str())).collect()
}

const DIABETES: [&str; 3] = ["icd10:E11", "snomed:44054006", "term:type_2_diabetes"];
const HYPERTENSION: [&str; 3] = ["icd10:I10", "snomed:38341003", "term:hypertension"];
const ASTHMA: [&str; 3] = ["icd10:J45", "snomed:195967001", "term:asthma"];

fn sorted(groups: &[&[&str]]) -> Vec<String> {
    let mut all: Vec<String> = groups.iter().flat_map(|g| g.iter().map(|l| (*l).to_owned())).collect();
    all.sort();
    all.dedup();
    all
}

#[test]
fn conditions_named_in_the_text_become_labels() {
    let check = |bytes: Vec<u8>, expected: &[&[&str]]| {
        assert_eq!(extra_labels(&bytes), sorted(expected), "{}", String::from_utf8_lossy(&bytes));
    };
    // An uncompressed content stream.
    check(
        pdf(
            &[(b"BT /F1 12 Tf 72 720 Td (Diagnosis: Type 2 diabetes mellitus) Tj 0 -14 Td (Hypertension, stable.) Tj ET", Encoding::Plain)],
            None,
        ),
        &[&DIABETES, &HYPERTENSION],
    );
    // A FlateDecode content stream, with a word split over a TJ array.
    check(
        pdf(&[(b"BT /F1 12 Tf 72 720 Td [(Bronchial ) 10 (asth) -20 (ma)] TJ ET", Encoding::Flate)], None),
        &[&ASTHMA],
    );
    // Japanese in a UTF-16BE hex string, and in a UTF-16BE literal string (whose byte 0x5C
    // is escaped, as writers must).
    check(pdf(&[(b"BT /F1 12 Tf 72 720 Td <FEFF7CD65C3F75C5> Tj ET", Encoding::Plain)], None), &[&DIABETES]);
    check(pdf(&[(b"BT (\xFE\xFF\x7C\xD6\\\x5C\x3F\x75\xC5) Tj ET", Encoding::Flate)], None), &[&DIABETES]);
    // Several pages, plain and compressed.
    check(
        pdf(&[(b"BT (asthma) Tj ET", Encoding::Plain), (b"BT (hypertension) Tj ET", Encoding::Flate)], None),
        &[&ASTHMA, &HYPERTENSION],
    );
    // The document information: Title, Subject (UTF-16BE for 高血圧) and Keywords.
    check(
        pdf(
            &[(b"BT (Referral) Tj ET", Encoding::Plain)],
            Some(b"<< /Title (Asthma review) /Subject <FEFF9AD888405727> /Keywords (gout; follow-up) /Author (Dr. Glaucoma) >>"),
        ),
        &[&ASTHMA, &HYPERTENSION, &["icd10:M10", "snomed:90560007", "term:gout"]],
    );
    // Type 1 diabetes is not labelled as type 2 for holding the word "diabetes".
    check(
        pdf(&[(b"BT (Type 1 diabetes since childhood) Tj ET", Encoding::Flate)], None),
        &[&["icd10:E10", "snomed:46635009", "term:type_1_diabetes"]],
    );
    // Text outside text operators is not the document's text.
    check(pdf(&[(b"% asthma\n/asthma BMC (asthma) EMC", Encoding::Plain)], None), &[]);
}

#[test]
fn documents_without_readable_text_upload_with_the_base_labels() {
    let check = |bytes: Vec<u8>| assert_eq!(extra_labels(&bytes), Vec::<String>::new());
    check(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n".to_vec());
    check(pdf(&[], None));
    check(pdf(&[(b"", Encoding::Plain)], None));
    check(pdf(&[(b"0 0 612 792 re f", Encoding::Flate)], None));
    // A scanned page: the image is not read, even when it holds bytes that look like text.
    let mut scanned = pdf(&[(b"q 612 0 0 792 0 0 cm /Im1 Do Q", Encoding::Plain)], None);
    let image = stream_object(20, " /Type /XObject /Subtype /Image", b"BT (asthma) Tj ET", Encoding::Flate);
    let at = scanned.windows(7).position(|w| w == b"trailer").unwrap();
    scanned.splice(at..at, image);
    check(scanned);
    // Filters other than FlateDecode are not decoded.
    let mut ascii85 = pdf(&[], None);
    let other = stream_object(21, " /Filter /ASCIIHexDecode", b"(asthma) Tj", Encoding::Plain);
    let at = ascii85.windows(7).position(|w| w == b"trailer").unwrap();
    ascii85.splice(at..at, other);
    check(ascii85);
    // Glyph ids of a composite font are not text.
    check(pdf(&[(b"BT /F2 12 Tf <0024002F0030> Tj ET", Encoding::Plain)], None));
}

#[test]
fn broken_and_truncated_documents_are_errors_or_read_as_far_as_they_go() {
    let whole = pdf(&[(b"BT (asthma and hypertension) Tj ET", Encoding::Flate)], None);
    let stream_start = whole.windows(7).position(|w| w == b"stream\n").unwrap() + 7;
    // Cut anywhere: without %%EOF it is refused, and with a %%EOF added it is read as far as
    // it goes.
    for cut in (0..whole.len() - 6).step_by(7) {
        let mut truncated = whole.get(..cut).unwrap().to_vec();
        match labels_of(&truncated) {
            Err(FormatError::Malformed(_)) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
        truncated.extend_from_slice(b"\n%%EOF\n");
        if cut >= 5 {
            let labels = labels_of(&truncated).unwrap();
            if cut < stream_start {
                assert_eq!(labels, BASE, "cut at {cut}");
            }
        }
    }
    // Corrupt compressed data, a stream that never ends, a /Length that lies, a dictionary
    // without an object header.
    let check = |bytes: &[u8], expected: &[&[&str]]| {
        assert_eq!(extra_labels(bytes), sorted(expected), "{}", String::from_utf8_lossy(bytes));
    };
    let mut corrupt = whole.clone();
    for byte in corrupt.get_mut(stream_start + 2..stream_start + 12).unwrap() {
        *byte ^= 0x55;
    }
    extra_labels(&corrupt);
    check(b"%PDF-1.4\n<< /Filter /FlateDecode >>\nstream\nxx\x9c garbage\n%%EOF", &[]);
    check(b"%PDF-1.4\n1 0 obj << /Length 999999 >>\nstream\n(asthma) Tj\nendstream\nendobj\n%%EOF", &[&ASTHMA]);
    check(b"%PDF-1.4\n1 0 obj << /Length 3 >>\nstream\n(asthma) Tj\nendstream\nendobj\n%%EOF", &[&ASTHMA]);
    check(b"%PDF-1.4\n<< >>\nstream\r\n(asthma) Tj\r\nendstream\n%%EOF", &[&ASTHMA]);
    check(b"%PDF-1.4\nstream\n(asthma) Tj (no end\n%%EOF", &[&ASTHMA]);
    check(b"%PDF-1.4\nendstream stream endstream\nstreamstream\n%%EOF", &[]);
}

#[test]
fn inflation_stops_at_the_budget() {
    // One stream inflating to 17 MiB of spaces, the text at its very end: it is beyond the
    // 16 MiB budget and is not read.
    let mut bomb_content = vec![b' '; 17 << 20];
    bomb_content.extend_from_slice(b"BT (asthma) Tj ET");
    let one_bomb = pdf(&[(&bomb_content, Encoding::Flate)], None);
    assert!(one_bomb.len() < 100_000, "{}", one_bomb.len());
    assert_eq!(extra_labels(&one_bomb), Vec::<String>::new());
    // The budget is over the whole document: after 17 streams of 1 MiB each, nothing more is
    // inflated, while uncompressed text is still read.
    let mebibyte = vec![b' '; 1 << 20];
    let mut pages: Vec<(&[u8], Encoding)> = vec![(b"BT (gout) Tj ET", Encoding::Flate)];
    pages.extend(std::iter::repeat_n((mebibyte.as_slice(), Encoding::Flate), 17));
    pages.push((b"BT (asthma) Tj ET", Encoding::Flate));
    pages.push((b"BT (hypertension) Tj ET", Encoding::Plain));
    let many_bombs = pdf(&pages, None);
    assert_eq!(extra_labels(&many_bombs), sorted(&[&["icd10:M10", "snomed:90560007", "term:gout"], &HYPERTENSION]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn pdfs_with_bytes_changed(changes in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12)) {
        let base = pdf(
            &[(b"BT [(Type 2 ) -300 (diabetes)] TJ <FEFF7CD65C3F75C5> Tj (a\\(b\\)) ' ET", Encoding::Flate),
              (b"BT (hypertension) Tj 1 0 0 1 0 0 Tm (x) \" ET BI /W 1 ID \x00 EI", Encoding::Plain)],
            Some(b"<< /Title (Asthma) /Subject <FEFF9AD8> >>"),
        );
        let mut bytes = base.clone();
        for (at, byte) in &changes {
            if let Some(slot) = bytes.get_mut(at % base.len()) {
                *slot = *byte;
            }
        }
        let _ = parse_upload(RecordFormat::Pdf, &bytes, &ctx());
    }

    #[test]
    fn arbitrary_content_streams(content in proptest::collection::vec(any::<u8>(), 0..400), flate in any::<bool>()) {
        let encoding = if flate { Encoding::Flate } else { Encoding::Plain };
        labels_of(&pdf(&[(&content, encoding)], None)).unwrap();
    }

    #[test]
    fn arbitrary_bytes_after_the_header(rest in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut bytes = b"%PDF-1.7\n".to_vec();
        bytes.extend(rest);
        bytes.extend_from_slice(b"%%EOF");
        labels_of(&bytes).unwrap();
    }
}
