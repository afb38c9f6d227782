//! PDF: validated by its header and end marker; a document is one part whose category the
//! uploader states. Its text (`pdf_text.rs`) is read only to label it with the conditions it
//! names (`terms.rs`); a document without readable text is labelled by its type alone.

use kura_core::record::PartCategory;

use crate::labels::LabelSet;
use crate::{FormatError, IngestContext, PartInfo, pdf_text, terms};

/// Writers may append a little after `%%EOF` (a newline, padding); readers look for it in the
/// last kilobyte.
const EOF_MARKER_WINDOW: usize = 1024;

pub fn parse(bytes: &[u8], ctx: &IngestContext, labels: &mut LabelSet) -> Result<Vec<PartInfo>, FormatError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(FormatError::Malformed("not a PDF: it does not start with %PDF-".into()));
    }
    let tail = bytes.get(bytes.len().saturating_sub(EOF_MARKER_WINDOW)..).unwrap_or_default();
    if !tail.windows(5).any(|w| w == b"%%EOF") {
        return Err(FormatError::Malformed("the PDF has no %%EOF marker at its end (truncated?)".into()));
    }
    let category = match ctx.document_category {
        None => PartCategory::Document,
        Some(c @ (PartCategory::Certificate | PartCategory::Document | PartCategory::PatientEntered)) => c,
        Some(_) => {
            return Err(FormatError::Unsupported("a PDF is a certificate, a document or patient-entered".into()));
        }
    };
    labels.add("type", "DocumentReference");
    terms::add_term_labels(&pdf_text::extract_text(bytes), labels);
    Ok(vec![PartInfo { index: 0, category, resource_type: "PDF".into() }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_core::time::Timestamp;

    const GOOD: &[u8] = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n";

    fn parsed(bytes: &[u8], category: Option<PartCategory>) -> Result<(PartCategory, Vec<String>), String> {
        let ctx = IngestContext { institution: "h", now: Timestamp::from_millis(0), document_category: category };
        let mut labels = LabelSet::default();
        let parts = parse(bytes, &ctx, &mut labels).map_err(|e| e.to_string())?;
        let [part] = parts.as_slice() else { return Err(format!("{} parts", parts.len())) };
        assert_eq!((part.index, part.resource_type.as_str()), (0, "PDF"));
        Ok((part.category, labels.into_sorted().iter().map(ToString::to_string).collect()))
    }

    #[test]
    fn pdfs_are_checked_by_header_and_end() {
        let check = |bytes: &[u8], category: Option<PartCategory>, expected: Result<PartCategory, &str>| {
            let got = parsed(bytes, category).map(|(c, labels)| {
                assert_eq!(labels, ["type:DocumentReference"]);
                c
            });
            assert_eq!(got, expected.map_err(str::to_owned), "{}", String::from_utf8_lossy(bytes));
        };
        check(GOOD, None, Ok(PartCategory::Document));
        check(GOOD, Some(PartCategory::Certificate), Ok(PartCategory::Certificate));
        check(GOOD, Some(PartCategory::Document), Ok(PartCategory::Document));
        check(
            GOOD,
            Some(PartCategory::Image),
            Err("unsupported: a PDF is a certificate, a document or patient-entered"),
        );
        let truncated = "malformed content: the PDF has no %%EOF marker at its end (truncated?)";
        check(b"%PDF-1.4\n1 0 obj", None, Err(truncated));
        let mut eof_far_from_the_end = GOOD.to_vec();
        eof_far_from_the_end.extend([b' '; EOF_MARKER_WINDOW]);
        check(&eof_far_from_the_end, None, Err(truncated));
        let not_pdf = "malformed content: not a PDF: it does not start with %PDF-";
        check(b"hello %%EOF", None, Err(not_pdf));
        check(b"", None, Err(not_pdf));
        check(b"\x89PNG\r\n\x1a\n", None, Err(not_pdf));
        check(b"%PDF-", None, Err(truncated));
    }
}
