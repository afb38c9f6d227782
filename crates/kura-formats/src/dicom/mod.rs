//! DICOM Part 10 files, through dicom-object. A file is one part of category `image`.

pub mod deid;
mod guard;
pub mod profile;
pub mod staff;

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use dicom_core::header::Header;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use kura_core::record::PartCategory;

use crate::labels::{Date, LabelSet, age_band};
use crate::{FormatError, IngestContext, PartInfo};

/// Reads a Part 10 file (with its 128-byte preamble).
pub(crate) fn read(bytes: &[u8]) -> Result<DefaultDicomObject, FormatError> {
    guard::check(bytes)?;
    // The parser is third-party code facing untrusted bytes: should it panic, the request fails
    // and the process lives on.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        OpenFileOptions::new().read_preamble(ReadPreamble::Always).from_reader(bytes)
    }));
    match parsed {
        Ok(Ok(obj)) => Ok(obj),
        // The parser's messages can quote values (a date it could not read), so none is passed on.
        _ => Err(FormatError::Malformed("the DICOM data set could not be decoded".into())),
    }
}

/// Writes a Part 10 file; the preamble is written as zeros.
pub(crate) fn write(obj: &DefaultDicomObject) -> Result<Vec<u8>, FormatError> {
    let mut out = Vec::new();
    obj.write_all(&mut out).map_err(|_| FormatError::Malformed("the DICOM file could not be written back".into()))?;
    Ok(out)
}

/// A text value with its padding removed; multiple values are joined with `\`.
pub(crate) fn text(data_set: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = data_set.get(tag)?.to_str().ok()?;
    let trimmed = value.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

pub(crate) fn put_text(data_set: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    data_set.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
}

/// Calls `f` on the data set and on every item of its sequences, at any depth. The structural
/// check on reading bounds the depth.
pub(crate) fn for_each_data_set_mut(data_set: &mut InMemDicomObject, f: &mut dyn FnMut(&mut InMemDicomObject)) {
    f(data_set);
    let sequences: Vec<Tag> = data_set.iter().filter(|e| e.items().is_some()).map(|e| e.tag()).collect();
    for tag in sequences {
        data_set.update_value(tag, |value| {
            for item in value.items_mut().into_iter().flatten() {
                for_each_data_set_mut(item, f);
            }
        });
    }
}

/// An age string (`045Y`, `006M`, `010W`, `003D`) in whole years.
fn age_in_years(raw: &str) -> Option<u32> {
    let (number, unit) = raw.split_at_checked(raw.len().checked_sub(1)?)?;
    let number: u32 = number.parse().ok()?;
    match unit {
        "Y" => Some(number),
        "M" => Some(number / 12),
        "W" => Some(number / 52),
        "D" => Some(number / 365),
        _ => None,
    }
}

/// Words of descriptions that say nothing about the study.
const STOP_WORDS: [&str; 24] = [
    "the", "and", "with", "without", "for", "from", "into", "onto", "per", "via", "not", "non", "but", "are", "was",
    "were", "this", "that", "all", "any", "both", "only", "then", "than",
];

/// At most this many `studyterm:` labels per file.
const MAX_STUDY_TERMS: usize = 20;

/// The searchable words of the study and series descriptions (`CT THORAX W/O CONTRAST` gives
/// `thorax` and `contrast`): lower-cased ASCII words of at least three characters with at least
/// one letter, without stop-words. A word holding a non-ASCII letter is dropped whole rather
/// than cut. Descriptions are free text that can carry identifiers, so numbers (accession and
/// record numbers, dates) and the words of the patient's name are never terms.
fn study_terms(descriptions: &[&str], patient_name: &str) -> Vec<String> {
    let name_words: HashSet<String> =
        patient_name.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    let mut terms: Vec<String> = Vec::new();
    let words = descriptions.iter().flat_map(|d| d.split(|c: char| !c.is_alphanumeric()));
    for word in words {
        if terms.len() >= MAX_STUDY_TERMS {
            break;
        }
        let word = word.to_ascii_lowercase();
        let usable = word.len() >= 3
            && word.bytes().all(|b| b.is_ascii_alphanumeric())
            && word.bytes().any(|b| b.is_ascii_alphabetic())
            && !STOP_WORDS.contains(&word.as_str())
            && !name_words.contains(&word);
        if usable && !terms.contains(&word) {
            terms.push(word);
        }
    }
    terms
}

/// Attributes that say the data set is an image; an image needs one of the pixel data elements.
const IMAGE_PIXEL_ATTRIBUTES: [Tag; 3] = [tags::ROWS, tags::COLUMNS, tags::BITS_ALLOCATED];
const PIXEL_DATA_ELEMENTS: [Tag; 3] = [tags::PIXEL_DATA, tags::FLOAT_PIXEL_DATA, tags::DOUBLE_FLOAT_PIXEL_DATA];

/// A file cut between two elements is still well-formed; what it lost shows in missing
/// mandatory attributes. Every composite object has its SOP class and instance, and an image
/// its pixel data.
fn check_complete(obj: &InMemDicomObject) -> Result<(), FormatError> {
    if text(obj, tags::SOP_CLASS_UID).is_none() || text(obj, tags::SOP_INSTANCE_UID).is_none() {
        return Err(FormatError::Malformed("DICOM: the data set has no SOP Class or Instance UID (truncated?)".into()));
    }
    let is_image = IMAGE_PIXEL_ATTRIBUTES.iter().any(|tag| obj.get(*tag).is_some());
    if is_image && !PIXEL_DATA_ELEMENTS.iter().any(|tag| obj.get(*tag).is_some()) {
        return Err(FormatError::Malformed("DICOM: the image has no pixel data (truncated?)".into()));
    }
    Ok(())
}

pub fn parse(
    bytes: &[u8],
    ctx: &IngestContext,
    labels: &mut LabelSet,
    birth_date: &mut Option<Date>,
) -> Result<Vec<PartInfo>, FormatError> {
    let obj = read(bytes)?;
    check_complete(&obj)?;
    labels.add("type", "ImagingStudy");
    if let Some(modality) = text(&obj, tags::MODALITY) {
        labels.add("modality", &modality);
    }
    if let Some(body_part) = text(&obj, tags::BODY_PART_EXAMINED) {
        labels.add("bodypart", &body_part.to_uppercase());
    }
    let descriptions: Vec<String> =
        [tags::STUDY_DESCRIPTION, tags::SERIES_DESCRIPTION].iter().filter_map(|tag| text(&obj, *tag)).collect();
    let descriptions: Vec<&str> = descriptions.iter().map(String::as_str).collect();
    for term in study_terms(&descriptions, &text(&obj, tags::PATIENT_NAME).unwrap_or_default()) {
        labels.add("studyterm", &term);
    }
    let meta_sop_class = obj.meta().media_storage_sop_class_uid().trim_end_matches(['\0', ' ']).to_owned();
    if let Some(sop_class) = text(&obj, tags::SOP_CLASS_UID).or((!meta_sop_class.is_empty()).then_some(meta_sop_class))
    {
        labels.add("sopclass", &sop_class);
    }
    match text(&obj, tags::PATIENT_SEX).as_deref() {
        Some("M") => labels.add("sex", "male"),
        Some("F") => labels.add("sex", "female"),
        Some("O") => labels.add("sex", "other"),
        _ => false,
    };
    let study_date = text(&obj, tags::STUDY_DATE)
        .and_then(|d| Date::parse(&d))
        .unwrap_or_else(|| Date::from_millis(ctx.now.as_millis()));
    let birth = text(&obj, tags::PATIENT_BIRTH_DATE).and_then(|d| Date::parse(&d));
    *birth_date = birth;
    let age = match birth {
        Some(birth) => birth.age_at(study_date),
        None => text(&obj, tags::PATIENT_AGE).and_then(|a| age_in_years(&a)),
    };
    if let Some(age) = age {
        labels.add("ageband", &age_band(age));
    }
    Ok(vec![PartInfo { index: 0, category: PartCategory::Image, resource_type: "DICOM".into() }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_object::meta::FileMetaTableBuilder;
    use kura_core::time::Timestamp;

    /// A small valid file with the given elements, written by dicom-object itself.
    pub(crate) fn file_with(elements: &[(Tag, VR, &str)]) -> Vec<u8> {
        let mut data_set = InMemDicomObject::new_empty();
        put_text(&mut data_set, tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7");
        put_text(&mut data_set, tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4");
        for (tag, vr, value) in elements {
            put_text(&mut data_set, *tag, *vr, value);
        }
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
            .media_storage_sop_instance_uid("1.2.3.4")
            .transfer_syntax("1.2.840.10008.1.2.1");
        let obj = data_set.with_meta(meta).unwrap();
        write(&obj).unwrap()
    }

    fn labels_of(elements: &[(Tag, VR, &str)]) -> Vec<String> {
        let ctx =
            IngestContext { institution: "h", now: Timestamp::from_millis(1_764_000_000_000), document_category: None };
        let mut labels = LabelSet::default();
        let parts = parse(&file_with(elements), &ctx, &mut labels, &mut None).unwrap();
        assert_eq!(parts, [PartInfo { index: 0, category: PartCategory::Image, resource_type: "DICOM".into() }]);
        labels.into_sorted().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn labels_from_the_header() {
        let check = |elements: &[(Tag, VR, &str)], expected: &[&str]| {
            let mut expected: Vec<String> = expected.iter().map(|l| (*l).to_owned()).collect();
            expected.push("sopclass:1.2.840.10008.5.1.4.1.1.7".into());
            expected.push("type:ImagingStudy".into());
            expected.sort();
            assert_eq!(labels_of(elements), expected);
        };
        check(&[], &[]);
        check(
            &[
                (tags::MODALITY, VR::CS, "CT"),
                (tags::BODY_PART_EXAMINED, VR::CS, "chest"),
                (tags::PATIENT_SEX, VR::CS, "F"),
            ],
            &["bodypart:CHEST", "modality:CT", "sex:female"],
        );
        check(&[(tags::PATIENT_SEX, VR::CS, "M")], &["sex:male"]);
        check(&[(tags::PATIENT_SEX, VR::CS, "O")], &["sex:other"]);
        check(&[(tags::PATIENT_SEX, VR::CS, "X")], &[]);
        // A body part with a space makes no label.
        check(&[(tags::BODY_PART_EXAMINED, VR::CS, "LEFT ARM")], &[]);
        // The age at the study date, from the birth date, else from PatientAge, else at `now`.
        check(
            &[(tags::PATIENT_BIRTH_DATE, VR::DA, "19691206"), (tags::STUDY_DATE, VR::DA, "20101205")],
            &["ageband:40-44"],
        );
        check(
            &[(tags::PATIENT_BIRTH_DATE, VR::DA, "19691206"), (tags::PATIENT_AGE, VR::AS, "012Y")],
            &["ageband:55-59"],
        );
        check(&[(tags::PATIENT_AGE, VR::AS, "045Y")], &["ageband:45-49"]);
        check(&[(tags::PATIENT_AGE, VR::AS, "006M")], &["ageband:0-4"]);
        check(&[(tags::PATIENT_AGE, VR::AS, "093Y")], &["ageband:90+"]);
        check(&[(tags::PATIENT_AGE, VR::AS, "old")], &[]);
        // Words of the descriptions, without stop-words, short words, numbers and the name.
        check(
            &[
                (tags::STUDY_DESCRIPTION, VR::LO, "CT THORAX W/O CONTRAST"),
                (tags::SERIES_DESCRIPTION, VR::LO, "Axial 5mm lung, with Contrast 2024"),
            ],
            &["studyterm:5mm", "studyterm:axial", "studyterm:contrast", "studyterm:lung", "studyterm:thorax"],
        );
        check(
            &[(tags::STUDY_DESCRIPTION, VR::LO, "MRI knee Jane DOE"), (tags::PATIENT_NAME, VR::PN, "Doe^Jane")],
            &["studyterm:knee", "studyterm:mri"],
        );
        check(&[(tags::SERIES_DESCRIPTION, VR::LO, "Übersicht thorax_ap")], &["studyterm:thorax"]);
    }

    #[test]
    fn study_terms_of_descriptions() {
        let check = |descriptions: &[&str], name: &str, expected: &[&str]| {
            assert_eq!(study_terms(descriptions, name), expected, "{descriptions:?}");
        };
        check(&["Chest PA and lateral", "PA"], "", &["chest", "lateral"]);
        check(&["the and for of without"], "", &[]);
        check(&["knee knee KNEE"], "", &["knee"]);
        check(&["Head-Neck CTA"], "", &["head", "neck", "cta"]);
        check(&["Frau Müller Schädel"], "Müller^Anna", &["frau"]);
        check(&["Smith follow up"], "SMITH^JOHN", &["follow"]);
        check(&["123 4567 20240101 t1w"], "", &["t1w"]);
        check(&[""], "", &[]);
        check(&[], "", &[]);
        let many: Vec<String> = (0..30).map(|i| format!("word{i}")).collect();
        let many = many.join(" ");
        let got = study_terms(&[many.as_str()], "");
        assert_eq!(got.len(), MAX_STUDY_TERMS);
        assert_eq!(got.first().map(String::as_str), Some("word0"));
        assert_eq!(got.last().map(String::as_str), Some("word19"));
    }

    #[test]
    fn files_missing_mandatory_attributes_are_refused() {
        let ctx = IngestContext { institution: "h", now: Timestamp::from_millis(0), document_category: None };
        let check = |bytes: Vec<u8>, expected: Result<(), &str>| {
            let got = parse(&bytes, &ctx, &mut LabelSet::default(), &mut None).map(drop).map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned));
        };
        check(file_with(&[]), Ok(()));
        check(
            file_with(&[(tags::ROWS, VR::US, "64")]),
            Err("malformed content: DICOM: the image has no pixel data (truncated?)"),
        );
        check(
            file_with(&[(tags::SOP_INSTANCE_UID, VR::UI, "")]),
            Err("malformed content: DICOM: the data set has no SOP Class or Instance UID (truncated?)"),
        );
    }

    #[test]
    fn ages_in_dicom_units() {
        let check = |raw: &str, expected: Option<u32>| assert_eq!(age_in_years(raw), expected, "{raw}");
        check("045Y", Some(45));
        check("018M", Some(1));
        check("104W", Some(2));
        check("400D", Some(1));
        check("45", None);
        check("Y", None);
        check("", None);
        check("-1Y", None);
        check("ÄY", None);
    }
}
