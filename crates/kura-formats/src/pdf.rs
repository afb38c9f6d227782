//! PDF: validated by its header and end marker only. Its text is not read here; a document is
//! one part whose category the uploader states.

use kura_core::record::PartCategory;

use crate::labels::LabelSet;
use crate::{FormatError, IngestContext, PartInfo};

pub fn parse(bytes: &[u8], ctx: &IngestContext, _labels: &mut LabelSet) -> Result<Vec<PartInfo>, FormatError> {
    if !bytes.starts_with(b"%PDF-") {
        return Err(FormatError::Malformed("a PDF starts with %PDF-".into()));
    }
    let tail_start = bytes.len().saturating_sub(1024);
    let tail = bytes.get(tail_start..).unwrap_or_default();
    if !tail.windows(5).any(|w| w == b"%%EOF") {
        return Err(FormatError::Malformed("the PDF has no %%EOF marker at its end (truncated?)".into()));
    }
    let category = match ctx.document_category {
        Some(c @ (PartCategory::Certificate | PartCategory::Document)) | Some(c @ PartCategory::PatientEntered) => c,
        Some(_) => return Err(FormatError::Unsupported("a PDF is a certificate or a document".into())),
        None => PartCategory::Document,
    };
    Ok(vec![PartInfo { index: 0, category, resource_type: "DocumentReference".into() }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_core::time::Timestamp;

    #[test]
    fn pdfs_are_checked_by_header_and_end() {
        let ctx = IngestContext { institution: "h", now: Timestamp::from_millis(0), document_category: None };
        let mut labels = LabelSet::default();
        let good = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n";
        assert_eq!(parse(good, &ctx, &mut labels).unwrap()[0].category, PartCategory::Document);
        assert!(parse(b"%PDF-1.4\n1 0 obj", &ctx, &mut labels).is_err());
        assert!(parse(b"hello %%EOF", &ctx, &mut labels).is_err());
        let cert = IngestContext { document_category: Some(PartCategory::Certificate), ..ctx };
        assert_eq!(parse(good, &cert, &mut labels).unwrap()[0].category, PartCategory::Certificate);
    }
}
