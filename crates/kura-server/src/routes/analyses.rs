//! Analyses and standing statistics (Fig. 9): researchers submit an analysis for a study and get
//! aggregates with a disclosure report; every account sees standing statistics per condition;
//! patients see which analyses included them and their privacy loss.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use kura_api_types as api;
use kura_core::labels::Label;
use kura_core::party::{AccountKind, Party};
use kura_store::model::AnalysisRow;
use serde::Deserialize;

use super::ApiJson;
use super::research::{approved_study, own_study, research_org};
use crate::analysis::{self};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::service::analyses;
use crate::state::AppState;
use crate::time;

fn view(row: &AnalysisRow) -> api::AnalysisView {
    api::AnalysisView {
        id: row.id.clone(),
        study: row.study.clone(),
        created_at: time::format(row.created_at),
        measures: row.measures.clone(),
        epsilon: row.epsilon,
        spec: serde_json::from_str(&row.spec).unwrap_or_default(),
        result: serde_json::from_str(&row.result).unwrap_or_default(),
    }
}

/// Runs an analysis over the records the study may use for statistics (owners who opted in to
/// contribute, and owners whose grants to the study allow `statistics`) and returns aggregates
/// only, after disclosure control. A cohort that would single people out by difference with
/// anything released before to the study's organisation, in any of its studies, is refused
/// (409 `differencing`); so is ε beyond the study's or the organisation's budget
/// (409 `privacy_budget`).
#[utoipa::path(post, path = "/api/v1/analyses", tag = "analysis", request_body = api::CreateAnalysisRequest,
    responses((status = 201, body = api::AnalysisView), (status = 409, body = api::ErrorEnvelope),
        (status = 422, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<api::CreateAnalysisRequest>,
) -> ApiResult<(StatusCode, Json<api::AnalysisView>)> {
    let study = approved_study(&state, &caller, &request.study).await?;
    let spec = kura_stats::parse_spec(&request.spec).map_err(|e| ApiError::invalid(format!("spec: {e}")))?;
    let row = analyses::run(&state, &caller, &study, &spec, &request.spec).await?;
    Ok((StatusCode::CREATED, Json(view(&row))))
}

/// A stored analysis of one of the caller's organisation's studies.
#[utoipa::path(get, path = "/api/v1/analyses/{id}", tag = "analysis", params(("id" = String, Path)),
    responses((status = 200, body = api::AnalysisView), (status = 404, body = api::ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<api::AnalysisView>> {
    let org = research_org(&state, &caller).await?;
    let row = state.store.analysis(&id).await?.ok_or_else(|| ApiError::not_found("analysis"))?;
    let study = state.store.study(&row.study).await?;
    if study.is_none_or(|s| s.org != org) {
        return Err(ApiError::not_found("analysis"));
    }
    Ok(Json(view(&row)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// The study whose analyses to list.
    pub study: String,
}

/// A study's analyses, oldest first.
#[utoipa::path(get, path = "/api/v1/analyses", tag = "analysis", params(ListParams),
    responses((status = 200, body = api::AnalysisList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<api::AnalysisList>> {
    let study = own_study(&state, &caller, &params.study).await?;
    let rows = state.store.analyses_of_study(&study.id).await?;
    Ok(Json(api::AnalysisList { analyses: rows.iter().map(view).collect() }))
}

/// Standing statistics over everyone who opted in to contribute: for each condition held by at
/// least k of them, how many, and their sex and age distribution, under disclosure control.
/// Kept current as records and opt-ins change.
#[utoipa::path(get, path = "/api/v1/statistics/conditions", tag = "analysis",
    responses((status = 200, body = api::StandingStatistics)), security(("bearer" = [])))]
pub async fn conditions(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<api::StandingStatistics>> {
    let now = state.clock.now();
    let k = u32::try_from(state.config.disclosure_k).unwrap_or(u32::MAX);
    state.statistics.catch_up(state.store.as_ref()).await?;
    let index = state.statistics.read().await;
    let threshold = kura_stats::spec::Profile::Threshold.threshold(k);
    let conditions = index
        .labels_with_prefix("condition:")
        .into_iter()
        .filter(|(_, count)| *count >= threshold)
        .filter_map(|(label, _)| Label::parse(&label).ok())
        .filter_map(|label| analysis::condition_statistics(&index, &label, k, now))
        .collect();
    Ok(Json(api::StandingStatistics { threshold, conditions }))
}

/// "People like me": for each of the caller's own conditions, the standing statistics of
/// everyone contributing with it, and the caller's own age band and sex to find themselves.
#[utoipa::path(get, path = "/api/v1/statistics/me", tag = "analysis",
    responses((status = 200, body = api::PeopleLikeMe)), security(("bearer" = [])))]
pub async fn people_like_me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::PeopleLikeMe>> {
    caller.require(&[AccountKind::Patient], "people like me")?;
    let Party::Account(patient) = caller.owner_party("statistics about you are for patients")? else {
        return Err(ApiError::forbidden("statistics about you are for patients"));
    };
    let now = state.clock.now();
    let k = u32::try_from(state.config.disclosure_k).unwrap_or(u32::MAX);
    let records = state.store.subject_records(&format!("account:{patient}")).await?;
    let mut own: Vec<Label> = records.iter().flat_map(|r| r.record.labels.iter().cloned()).collect();
    own.sort();
    own.dedup();
    let birth = records.iter().filter_map(|r| r.birth_day).max();
    let your_age_band = birth
        .and_then(|b| kura_index::dates::age_in_years(b, analysis::today_days(now)))
        // The bands of the standing statistics' age distribution, ten years wide.
        .map(|age| kura_stats::spec::age_band_key(age / 10 * 10, 10));
    let sex = |s: &str| own.iter().any(|l| l.as_str() == format!("sex:{s}"));
    let your_sex = match (sex("female"), sex("male")) {
        (true, false) => Some("female".to_owned()),
        (false, true) => Some("male".to_owned()),
        _ => Some("other_or_unknown".to_owned()),
    };
    state.statistics.catch_up(state.store.as_ref()).await?;
    let index = state.statistics.read().await;
    let conditions = own
        .iter()
        .filter(|label| label.system() == "condition")
        .map(|label| api::MyCondition {
            condition: label.code().to_owned(),
            statistics: analysis::condition_statistics(&index, label, k, now),
            your_age_band: your_age_band.clone(),
            your_sex: your_sex.clone(),
        })
        .collect();
    Ok(Json(api::PeopleLikeMe { threshold: kura_stats::spec::Profile::Threshold.threshold(k), conditions }))
}

/// The analyses that included the caller's records (study, date, measures; never a result), the
/// research searches whose released count and handles included them (study, organisation,
/// date), and the caller's privacy loss so far with the cap they set.
#[utoipa::path(get, path = "/api/v1/statistics/participation", tag = "analysis",
    responses((status = 200, body = api::ParticipationView)), security(("bearer" = [])))]
pub async fn participation(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<api::ParticipationView>> {
    let party = caller.owner_party("participation belongs to patients")?;
    let Party::Account(patient) = &party else {
        return Err(ApiError::forbidden("participation belongs to patients"));
    };
    let subjects = vec![format!("account:{patient}")];
    let rows = state.store.participation(&subjects).await?;
    let loss = state.store.privacy_loss(&subjects).await?.into_iter().map(|(_, e)| e).sum();
    let cap = state.store.preferences(&party).await?.and_then(|p| p.privacy_loss_cap);
    let mut organisations: HashMap<kura_core::ids::OrgId, String> = HashMap::new();
    let mut searches = Vec::new();
    for m in state.store.search_matches(&subjects, 500).await? {
        let organisation = match organisations.get(&m.org) {
            Some(name) => name.clone(),
            None => {
                let name = state.store.org(&m.org).await?.map(|o| o.name).unwrap_or_default();
                organisations.insert(m.org.clone(), name.clone());
                name
            }
        };
        searches.push(api::SearchMatchEntry {
            study: m.study,
            study_title: m.study_title,
            organisation,
            at: time::format(m.at),
        });
    }
    Ok(Json(api::ParticipationView {
        searches,
        privacy_loss: loss,
        privacy_loss_cap: cap,
        analyses: rows
            .into_iter()
            .map(|p| api::ParticipationEntry {
                analysis: p.analysis,
                study: p.study,
                study_title: p.study_title,
                measures: p.measures,
                epsilon: p.epsilon,
                at: time::format(p.at),
            })
            .collect(),
    }))
}
