//! A small dictionary of common conditions, by their English and Japanese names, with their
//! SNOMED CT and ICD-10 codes: what the text of a document (a PDF certificate or letter) is
//! labelled by, since it carries no codings of its own.
//!
//! Codes are the commonly published ones; where a condition has no single ICD-10 code (or we
//! could not confirm one) it has only its SNOMED CT code. Matching finds names, not meaning: a
//! negated mention ("no history of asthma") labels the document too.

use crate::labels::LabelSet;

const SNOMED: &str = "http://snomed.info/sct";
const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";

/// One condition of the dictionary.
pub struct Term {
    /// The canonical English name; it is matched too, and makes the `term:` label (spaces
    /// become `_`).
    pub name: &'static str,
    /// Other English names and abbreviations, matched as whole words.
    pub english: &'static [&'static str],
    /// Japanese names, matched anywhere in the text.
    pub japanese: &'static [&'static str],
    pub snomed: &'static str,
    pub icd10: Option<&'static str>,
}

const fn term(
    name: &'static str,
    english: &'static [&'static str],
    japanese: &'static [&'static str],
    snomed: &'static str,
    icd10: Option<&'static str>,
) -> Term {
    Term { name, english, japanese, snomed, icd10 }
}

/// The dictionary. Where one name holds another ("type 1 diabetes" holds "diabetes", 肺高血圧症
/// holds 高血圧), the longer match wins, so the more specific conditions are listed even where
/// they are rarer: they keep a mention from labelling the document with the wrong code.
pub const TERMS: &[Term] = &[
    // Endocrine and metabolic.
    term(
        "type 2 diabetes",
        &[
            "diabetes",
            "diabetes mellitus",
            "type 2 diabetes mellitus",
            "type ii diabetes",
            "type ii diabetes mellitus",
            "diabetes mellitus type 2",
            "diabetes mellitus type ii",
            "non insulin dependent diabetes",
            "t2dm",
        ],
        &["糖尿病", "2型糖尿病", "ii型糖尿病", "Ⅱ型糖尿病"],
        "44054006",
        Some("E11"),
    ),
    term(
        "type 1 diabetes",
        &[
            "type 1 diabetes mellitus",
            "type i diabetes",
            "type i diabetes mellitus",
            "diabetes mellitus type 1",
            "diabetes mellitus type i",
            "insulin dependent diabetes",
            "juvenile diabetes",
            "t1dm",
        ],
        &["1型糖尿病", "i型糖尿病", "Ⅰ型糖尿病"],
        "46635009",
        Some("E10"),
    ),
    term("prediabetes", &["pre diabetes"], &["境界型糖尿病", "糖尿病予備群"], "15777000", None),
    term("gestational diabetes", &["gestational diabetes mellitus"], &["妊娠糖尿病"], "11687002", Some("O24.4")),
    term("diabetes insipidus", &[], &["尿崩症"], "15771004", Some("E23.2")),
    term(
        "hyperlipidemia",
        &["hyperlipidaemia", "dyslipidemia", "dyslipidaemia"],
        &["高脂血症", "脂質異常症"],
        "55822004",
        Some("E78.5"),
    ),
    term(
        "hypercholesterolemia",
        &["hypercholesterolaemia", "high cholesterol"],
        &["高コレステロール血症"],
        "13644009",
        Some("E78.0"),
    ),
    term("hyperuricemia", &["hyperuricaemia"], &["高尿酸血症"], "35885006", Some("E79.0")),
    term("gout", &[], &["痛風"], "90560007", Some("M10")),
    term("obesity", &[], &["肥満"], "414916001", Some("E66")),
    term("hypothyroidism", &[], &["甲状腺機能低下症"], "40930008", Some("E03.9")),
    term("hyperthyroidism", &[], &["甲状腺機能亢進症"], "34486009", Some("E05")),
    // Circulatory.
    term(
        "hypertension",
        &["high blood pressure", "arterial hypertension", "essential hypertension", "htn"],
        &["高血圧", "高血圧症", "本態性高血圧"],
        "38341003",
        Some("I10"),
    ),
    term("pulmonary hypertension", &[], &["肺高血圧症"], "70995007", None),
    term("coronary artery disease", &["coronary heart disease"], &["冠動脈疾患"], "53741008", Some("I25.1")),
    term("angina", &["angina pectoris"], &["狭心症"], "194828000", Some("I20")),
    term("myocardial infarction", &["heart attack"], &["心筋梗塞"], "22298006", Some("I21")),
    term(
        "heart failure",
        &["congestive heart failure", "cardiac failure", "chf"],
        &["心不全"],
        "84114007",
        Some("I50"),
    ),
    term("atrial fibrillation", &["afib"], &["心房細動"], "49436004", Some("I48")),
    term("stroke", &["cerebrovascular accident", "cva"], &["脳卒中"], "230690007", Some("I64")),
    term("cerebral infarction", &["ischemic stroke", "ischaemic stroke"], &["脳梗塞"], "432504007", Some("I63")),
    term(
        "cerebral hemorrhage",
        &["cerebral haemorrhage", "intracerebral hemorrhage", "intracerebral haemorrhage", "hemorrhagic stroke"],
        &["脳出血"],
        "274100004",
        Some("I61"),
    ),
    term("anemia", &["anaemia"], &["貧血"], "271737000", Some("D64.9")),
    // Respiratory.
    term("asthma", &["bronchial asthma"], &["喘息", "気管支喘息"], "195967001", Some("J45")),
    term(
        "chronic obstructive pulmonary disease",
        &["copd", "chronic obstructive lung disease"],
        &["慢性閉塞性肺疾患"],
        "13645005",
        Some("J44"),
    ),
    term("pneumonia", &[], &["肺炎"], "233604007", Some("J18")),
    term("sleep apnea", &["sleep apnoea"], &["睡眠時無呼吸症候群"], "73430006", Some("G47.3")),
    term("allergic rhinitis", &[], &["アレルギー性鼻炎"], "61582004", Some("J30.4")),
    // Infections.
    term("influenza", &["flu"], &["インフルエンザ"], "6142004", None),
    term("covid-19", &["covid", "sars cov 2 infection"], &["新型コロナウイルス感染症"], "840539006", Some("U07.1")),
    term("tuberculosis", &[], &["結核"], "56717001", None),
    term("hepatitis b", &[], &["b型肝炎"], "66071002", None),
    term("hepatitis c", &[], &["c型肝炎"], "50711007", None),
    term("urinary tract infection", &["uti"], &["尿路感染症"], "68566005", Some("N39.0")),
    // Kidney, digestive.
    term("chronic kidney disease", &["ckd", "chronic renal disease"], &["慢性腎臓病"], "709044004", Some("N18")),
    term(
        "gastroesophageal reflux disease",
        &["gastro oesophageal reflux disease", "gastroesophageal reflux", "gerd"],
        &["胃食道逆流症"],
        "235595009",
        Some("K21"),
    ),
    term("gastric ulcer", &["stomach ulcer"], &["胃潰瘍"], "397825006", Some("K25")),
    // Musculoskeletal, skin.
    term("osteoporosis", &[], &["骨粗鬆症", "骨粗しょう症"], "64859006", Some("M81")),
    term("osteoarthritis", &[], &["変形性関節症"], "396275006", None),
    term("rheumatoid arthritis", &[], &["関節リウマチ"], "69896004", Some("M06.9")),
    term("atopic dermatitis", &["atopic eczema"], &["アトピー性皮膚炎"], "24079001", Some("L20")),
    term("psoriasis", &[], &["乾癬"], "9014002", Some("L40")),
    // Mental and neurological.
    term("depression", &["depressive disorder"], &["うつ病", "鬱病"], "35489007", Some("F32")),
    term("anxiety disorder", &[], &["不安障害"], "197480006", Some("F41.9")),
    term("bipolar disorder", &[], &["双極性障害"], "13746004", Some("F31")),
    term("schizophrenia", &[], &["統合失調症"], "58214004", Some("F20")),
    term("dementia", &[], &["認知症"], "52448006", Some("F03")),
    term(
        "alzheimer disease",
        &["alzheimer's disease", "alzheimers disease", "alzheimer's dementia"],
        &["アルツハイマー病", "アルツハイマー型認知症"],
        "26929004",
        Some("G30"),
    ),
    term(
        "parkinson disease",
        &["parkinson's disease", "parkinsons disease"],
        &["パーキンソン病"],
        "49049000",
        Some("G20"),
    ),
    term("epilepsy", &[], &["てんかん"], "84757009", Some("G40")),
    term("migraine", &[], &["片頭痛", "偏頭痛"], "37796009", Some("G43")),
    // Eyes.
    term("cataract", &[], &["白内障"], "193570009", Some("H26.9")),
    term("glaucoma", &[], &["緑内障"], "23986001", Some("H40")),
    // Cancers.
    term("lung cancer", &["lung carcinoma"], &["肺癌", "肺がん"], "363358000", Some("C34")),
    term("breast cancer", &["breast carcinoma"], &["乳癌", "乳がん"], "254837009", Some("C50")),
    term("gastric cancer", &["stomach cancer"], &["胃癌", "胃がん"], "363349007", Some("C16")),
    term("prostate cancer", &["prostate carcinoma"], &["前立腺癌", "前立腺がん"], "399068003", Some("C61")),
];

/// Phrases that hold a condition's name without saying that the patient has it: vaccines
/// against it, on the vaccination certificates that documents often are. They take part in the
/// longest-match rule and label nothing.
const ENGLISH_NON_CONDITIONS: &[&str] = &[
    "influenza vaccine",
    "influenza vaccination",
    "influenza immunization",
    "flu vaccine",
    "flu vaccination",
    "flu shot",
    "covid 19 vaccine",
    "covid 19 vaccination",
    "covid vaccine",
    "covid vaccination",
    "hepatitis b vaccine",
    "hepatitis b vaccination",
];
const JAPANESE_NON_CONDITIONS: &[&str] = &[
    "インフルエンザワクチン",
    "インフルエンザ予防接種",
    "新型コロナウイルス感染症ワクチン",
    "新型コロナウイルス感染症予防接種",
    "b型肝炎ワクチン",
    "b型肝炎予防接種",
];

/// Labels the text with the terms it names: `term:<name>` and the term's codes (ICD-10 at
/// every level, like codings).
pub fn add_term_labels(text: &str, labels: &mut LabelSet) {
    for term in matched_terms(text) {
        labels.add("term", &term.name.replace(' ', "_"));
        labels.add_coding(SNOMED, term.snomed);
        if let Some(icd10) = term.icd10 {
            labels.add_coding(ICD10, icd10);
        }
    }
}

/// The terms the text names, in dictionary order. English names match as whole words, ignoring
/// case and punctuation; Japanese names match anywhere, ignoring whitespace (PDF text often
/// places each character on its own). Where matches overlap, the longest wins, and a vaccine's
/// name is no mention of its disease.
pub fn matched_terms(text: &str) -> Vec<&'static Term> {
    let mut found = vec![false; TERMS.len()];
    // Phrases that name no condition are matched as a term past the end of the dictionary.
    let no_term = TERMS.len();
    let english_patterns = TERMS
        .iter()
        .enumerate()
        .flat_map(|(i, term)| std::iter::once(term.name).chain(term.english.iter().copied()).map(move |name| (i, name)))
        .chain(ENGLISH_NON_CONDITIONS.iter().map(|phrase| (no_term, *phrase)))
        .map(|(i, name)| (i, english_words(name)));
    mark_longest_matches(&english_words(text), english_patterns.collect(), 1, &mut found);
    let japanese_patterns = TERMS
        .iter()
        .enumerate()
        .flat_map(|(i, term)| term.japanese.iter().map(move |name| (i, *name)))
        .chain(JAPANESE_NON_CONDITIONS.iter().map(|phrase| (no_term, *phrase)))
        .map(|(i, name)| (i, compact(name)));
    mark_longest_matches(&compact(text), japanese_patterns.collect(), 0, &mut found);
    TERMS.iter().zip(found).filter_map(|(term, found)| found.then_some(term)).collect()
}

/// Full-width ASCII (`２型`, `ＣＯＰＤ`) as ASCII, as Japanese documents often write it.
fn fold_width(c: char) -> char {
    match u32::from(c) {
        code @ 0xFF01..=0xFF5E => char::from_u32(code - 0xFEE0).unwrap_or(c),
        0x3000 => ' ',
        _ => c,
    }
}

/// Lower-case ASCII words, each with a space on either side: ` type 2 diabetes `.
fn english_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push(' ');
    for c in text.chars().map(fold_width) {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    if !out.ends_with(' ') {
        out.push(' ');
    }
    out
}

/// The text lower-cased, without whitespace or control characters.
fn compact(text: &str) -> String {
    text.chars()
        .map(fold_width)
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Finds every occurrence of every pattern in `text` and accepts them longest first, skipping
/// any that overlaps one already accepted; marks the terms accepted. `padding` is how many
/// bytes at either end of a pattern are separators that neighbouring matches may share.
fn mark_longest_matches(text: &str, patterns: Vec<(usize, String)>, padding: usize, found: &mut [bool]) {
    let mut matches: Vec<(usize, usize, usize)> = Vec::new();
    for (term, pattern) in &patterns {
        if pattern.len() <= 2 * padding {
            continue;
        }
        let mut from = 0;
        while let Some(i) = text.get(from..).and_then(|rest| rest.find(pattern.as_str())) {
            let start = from + i;
            let end = start + pattern.len();
            matches.push((start + padding, end - padding, *term));
            from = end - padding;
        }
    }
    matches.sort_by_key(|&(start, end, _)| (std::cmp::Reverse(end - start), start));
    let mut covered = vec![false; text.len()];
    for (start, end, term) in matches {
        let Some(span) = covered.get_mut(start..end) else { continue };
        if span.iter().all(|c| !c) {
            span.fill(true);
            if let Some(slot) = found.get_mut(term) {
                *slot = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use kura_core::labels::Label;

    use super::*;

    fn names(text: &str) -> Vec<&'static str> {
        matched_terms(text).iter().map(|t| t.name).collect()
    }

    #[test]
    fn the_dictionary_is_well_formed() {
        assert!(TERMS.len() >= 30, "{}", TERMS.len());
        let mut seen = BTreeSet::new();
        for term in TERMS {
            assert!(seen.insert(term.name), "{} twice", term.name);
            assert!(!term.japanese.is_empty(), "{} has no Japanese name", term.name);
            assert!(Label::new("term", &term.name.replace(' ', "_")).is_ok(), "{}", term.name);
            assert!(term.snomed.len() >= 6 && term.snomed.bytes().all(|b| b.is_ascii_digit()), "{}", term.name);
            if let Some(icd10) = term.icd10 {
                let shape = icd10.len() >= 3
                    && icd10.starts_with(|c: char| c.is_ascii_uppercase())
                    && icd10.chars().skip(1).all(|c| c.is_ascii_digit() || c == '.');
                assert!(shape, "{}: {icd10}", term.name);
            }
            // Every name finds its own term when it stands alone.
            for name in
                std::iter::once(term.name).chain(term.english.iter().copied()).chain(term.japanese.iter().copied())
            {
                assert_eq!(names(name), [term.name], "{name}");
            }
        }
    }

    #[test]
    fn english_matches_whole_words_in_any_case() {
        let check = |text: &str, expected: &[&str]| assert_eq!(names(text), expected, "{text}");
        check("Diagnosis: Type 2 Diabetes Mellitus.", &["type 2 diabetes"]);
        check("DIABETES", &["type 2 diabetes"]);
        check("type-1 diabetes, on insulin", &["type 1 diabetes"]);
        check("History of asthma and hypertension", &["hypertension", "asthma"]);
        check("Hypertensive", &[]);
        check("prediabetes", &["prediabetes"]);
        check("pre-diabetes; no diabetes", &["type 2 diabetes", "prediabetes"]);
        check("Alzheimer's disease", &["alzheimer disease"]);
        check("COVID-19 pneumonia", &["pneumonia", "covid-19"]);
        check("pulmonary hypertension", &["pulmonary hypertension"]);
        check("asthmatic gouty strokes", &[]);
        check("ＣＯＰＤ", &["chronic obstructive pulmonary disease"]);
        // A vaccine against a disease is no diagnosis of it.
        check("Influenza vaccine given; COVID-19 vaccination 2 doses", &[]);
        check("flu shot, and influenza in March", &["influenza"]);
        check("", &[]);
    }

    #[test]
    fn japanese_matches_anywhere_and_across_spaces() {
        let check = |text: &str, expected: &[&str]| assert_eq!(names(text), expected, "{text}");
        check("診断名：2型糖尿病", &["type 2 diabetes"]);
        check("既往歴に糖尿病あり", &["type 2 diabetes"]);
        check("１型 糖 尿 病", &["type 1 diabetes"]);
        check("高血圧症、気管支喘息", &["hypertension", "asthma"]);
        check("肺高血圧症", &["pulmonary hypertension"]);
        check("妊娠糖尿病と高血圧", &["gestational diabetes", "hypertension"]);
        check("Ｂ型肝炎", &["hepatitis b"]);
        check("インフルエンザ予防接種済証", &[]);
        check("新型コロナウイルス感染症 予防接種証明書", &[]);
        check("健康診断", &[]);
    }

    #[test]
    fn matches_become_labels() {
        let check = |text: &str, expected: &[&str]| {
            let mut labels = LabelSet::default();
            add_term_labels(text, &mut labels);
            let got: Vec<String> = labels.into_sorted().iter().map(ToString::to_string).collect();
            assert_eq!(got, expected, "{text}");
        };
        check("糖尿病", &["icd10:E11", "snomed:44054006", "term:type_2_diabetes"]);
        check("hypertension", &["icd10:I10", "snomed:38341003", "term:hypertension"]);
        check("喘息", &["icd10:J45", "snomed:195967001", "term:asthma"]);
        check("cataract", &["icd10:H26", "icd10:H26.9", "snomed:193570009", "term:cataract"]);
        check("結核", &["snomed:56717001", "term:tuberculosis"]);
        check("nothing of note", &[]);
    }
}
