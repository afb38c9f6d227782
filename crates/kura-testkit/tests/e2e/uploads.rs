//! Every fixture uploads and gets labels (DESIGN.md section 2).

use kura_testkit::{TestApp, fixture, pdf_with_text};

use super::FHIR;

fn labels(response: &serde_json::Value) -> Vec<String> {
    response["labels"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn all_fixtures_upload_with_labels() {
    let app = TestApp::new().await;
    let aoba = app.institution("Aoba General Hospital").await;
    for n in 1..=15 {
        let name = format!("synthea-r4/patient-{n:02}.json");
        let bundle: serde_json::Value = serde_json::from_slice(&fixture(&name)).unwrap();
        let gender = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["resource"]["resourceType"] == "Patient")
            .map(|e| e["resource"]["gender"].as_str().unwrap().to_owned())
            .unwrap();
        let uploaded = app.upload(&aoba, &format!("MRN-{n}"), FHIR, fixture(&name)).await.expect(201).json();
        let labels = labels(&uploaded);
        assert!(labels.contains(&format!("sex:{gender}")), "{name}: {labels:?}");
        assert!(labels.contains(&format!("institution:{}", aoba.id)), "{name}");
        assert!(labels.contains(&"type:Patient".to_owned()) && labels.contains(&"format:fhir".to_owned()), "{name}");
        assert!(labels.iter().any(|l| l.starts_with("ageband:")), "{name}");
        assert!(labels.iter().any(|l| l.starts_with("snomed:")), "{name}");
        assert!(labels.iter().any(|l| l.starts_with("loinc:")), "{name}");
        assert_eq!(uploaded["parts"].as_array().unwrap().len(), bundle["entry"].as_array().unwrap().len(), "{name}");
    }
    for (file, modality) in [("dicom/CT_small.dcm", "modality:CT"), ("dicom/MR_small.dcm", "modality:MR")] {
        let uploaded = app.upload(&aoba, "MRN-1", "application/dicom", fixture(file)).await.expect(201).json();
        let labels = labels(&uploaded);
        assert!(
            labels.contains(&modality.to_owned()) && labels.contains(&"category:image".to_owned()),
            "{file}: {labels:?}"
        );
    }
    let pdf =
        app.upload(&aoba, "MRN-1", "application/pdf", pdf_with_text("Discharge summary")).await.expect(201).json();
    let labels = labels(&pdf);
    assert!(
        labels.contains(&"category:document".to_owned()) && labels.contains(&"format:pdf".to_owned()),
        "{labels:?}"
    );
}

#[tokio::test]
async fn a_single_resource_is_a_one_part_record() {
    let app = TestApp::new().await;
    let aoba = app.institution("Aoba").await;
    let condition = serde_json::json!({
        "resourceType": "Condition",
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]},
        "subject": {"reference": "Patient/1"}
    });
    let uploaded = app.upload(&aoba, "MRN-9", FHIR, serde_json::to_vec(&condition).unwrap()).await.expect(201).json();
    let labels = labels(&uploaded);
    assert!(labels.contains(&"icd10:E11.9".to_owned()) && labels.contains(&"icd10:E11".to_owned()), "{labels:?}");
    assert_eq!(uploaded["parts"][0]["category"], "condition");
}
