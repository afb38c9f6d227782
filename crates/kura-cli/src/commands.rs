//! The client commands: each one resolves the server and the caller's token (flag, environment
//! or the saved session), makes its requests through [`Client`], and prints either the server's
//! JSON as is (`--json`) or a readable summary.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use base64::Engine;
use kura_api_types as api;
use serde_json::{Value, json};

use crate::client::{ApiFailure, Client, decode};
use crate::output::{self, Table, comma_list, or_dash, wire_name};
use crate::secrets::{self, Secret};
use crate::session::{self, Session};
use crate::{
    AccountArgs, AccountCommand, ActAs, AuditArgs, AuditCommand, ClientArgs, ClientCommand, Connection, DelegationArgs,
    DelegationCommand, GrantArgs, GrantCommand, GrantCreateArgs, LinkArgs, LinkCommand, LoginArgs, OrgArgs, OrgCommand,
    RecordsArgs, RecordsCommand, RegisterArgs, TotpArgs, TotpCommand, upload, values,
};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The server to talk to and the token to send: flags and environment first, then the session
/// saved by `kura login` (whose token is only used with the server it came from).
fn resolve(conn: &Connection) -> Result<(String, Option<Secret>)> {
    let saved = if conn.server.is_none() || conn.token.is_none() {
        match session::default_path() {
            Ok(path) => session::load(&path)?,
            Err(_) => None,
        }
    } else {
        None
    };
    let server = conn
        .server
        .as_deref()
        .map(session::normalise_server)
        .or_else(|| saved.as_ref().map(|s| s.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = match &conn.token {
        Some(token) => Some(Secret::new(token.trim())),
        None => saved.filter(|s| s.is_for(&server)).map(|s| s.token()),
    };
    Ok((server, token))
}

/// A client that sends the caller's token (and `kura-act-as` when given).
pub fn connect(conn: &Connection, act_as: Option<&ActAs>) -> Result<Client> {
    let (server, token) = resolve(conn)?;
    let Some(token) = token else {
        bail!("not logged in to {server}: run `kura login --username NAME`, or pass --token (or set KURA_TOKEN)");
    };
    Ok(Client::new(&server, Some(token))?.acting_as(act_as.and_then(|a| a.act_as.clone())))
}

/// A client without credentials (logging in, registering).
fn connect_anonymously(conn: &Connection) -> Result<Client> {
    let (server, _) = resolve(conn)?;
    Client::new(&server, None)
}

/// Prints the answer as JSON, or hands it, decoded, to `human`.
pub fn show<T: serde::de::DeserializeOwned>(json: bool, value: Value, human: impl FnOnce(T)) -> Result<ExitCode> {
    if json {
        if !value.is_null() {
            output::print_json(&value);
        }
    } else {
        human(decode(value)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// For answers without a body: the JSON mode prints nothing, people get `message`.
pub fn done(json: bool, message: &str) -> Result<ExitCode> {
    if !json {
        println!("{message}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The id of the organisation `text` names: an id as is, or an exact (case-insensitive) name.
async fn resolve_org(client: &Client, text: &str) -> Result<String> {
    let orgs: Vec<api::OrgView> = decode(client.get(&["api", "v1", "orgs"]).await?)?;
    if orgs.iter().any(|o| o.id == text) {
        return Ok(text.to_owned());
    }
    let named: Vec<&api::OrgView> = orgs.iter().filter(|o| o.name.eq_ignore_ascii_case(text.trim())).collect();
    match named.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Ok(text.to_owned()),
        _ => bail!("several organisations are named '{text}'; give the id (see `kura org list`)"),
    }
}

/// Organisation names by their party text (`org:<id>`), so that listings for people name
/// hospitals rather than ids. Empty when the list cannot be read; ids are shown then.
#[derive(Default)]
pub struct OrgNames(BTreeMap<String, String>);

impl OrgNames {
    pub async fn load(client: &Client, json: bool) -> Self {
        if json {
            return Self::default();
        }
        let orgs = match client.get(&["api", "v1", "orgs"]).await.and_then(decode::<Vec<api::OrgView>>) {
            Ok(orgs) => orgs,
            Err(_) => return Self::default(),
        };
        Self(orgs.into_iter().map(|o| (format!("org:{}", o.id), o.name)).collect())
    }

    /// `Aoba General Hospital` for `org:<its id>`; anything else as it is.
    pub fn party(&self, text: &str) -> String {
        self.0.get(text).cloned().unwrap_or_else(|| text.to_owned())
    }

    pub fn org(&self, id: &str) -> String {
        self.party(&format!("org:{id}"))
    }
}

/// A password from stdin, or a generated one (and whether it was generated).
fn password_from(password_stdin: bool) -> Result<(Secret, bool)> {
    if password_stdin {
        Ok((secrets::read_password_stdin()?, false))
    } else {
        Ok((secrets::generate_password()?, true))
    }
}

/// Shows a generated password once: on stdout for people, on stderr beside `--json` output.
fn show_generated_password(json: bool, password: &Secret) {
    if json {
        eprintln!("generated password (shown once): {}", password.expose());
    } else {
        println!("password: {}  (generated; shown once)", password.expose());
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions and accounts

pub async fn login(args: LoginArgs) -> Result<ExitCode> {
    let client = connect_anonymously(&args.conn)?;
    let password = if args.password_stdin {
        secrets::read_password_stdin()?
    } else {
        secrets::prompt_password(&format!("Password for {} at {}: ", args.username, client.server()))?
    };
    let response = match client.login(&args.username, &password, args.totp.clone()).await {
        Ok(response) => response,
        Err(e) if e.downcast_ref::<ApiFailure>().is_some_and(|f| f.code == "totp_required") => {
            bail!("{e}; pass --totp CODE from your authenticator app");
        }
        Err(e) => return Err(e),
    };
    let path = session::default_path()?;
    let token = Secret::new(response.token);
    let saved = Session::new(
        client.server(),
        &token,
        Some(response.account.username.clone()),
        Some(response.expires_at.clone()),
    );
    session::save(&path, &saved)?;
    if args.conn.json {
        // The token stays in the session file; it is not printed.
        output::print_json(&json!({
            "account": response.account,
            "expires_at": response.expires_at,
            "server": client.server(),
            "session_file": path,
        }));
    } else {
        println!(
            "logged in to {} as {} ({}); the session lasts until {}",
            client.server(),
            response.account.username,
            response.account.kind,
            response.expires_at
        );
        println!("session saved to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn logout() -> Result<ExitCode> {
    let path = session::default_path()?;
    if session::remove(&path)? {
        println!("logged out (removed {})", path.display());
    } else {
        println!("no session to forget at {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn print_account(account: &api::AccountView) {
    println!("username  {}", account.username);
    println!("kind      {}", account.kind);
    println!("id        {}", account.id);
    println!("org       {}", or_dash(account.org.as_deref()));
    println!("totp      {}", if account.totp_enabled { "on" } else { "off" });
}

pub async fn whoami(conn: Connection) -> Result<ExitCode> {
    let client = connect(&conn, None)?;
    let me = client.get(&["api", "v1", "me"]).await?;
    show(conn.json, me, |account: api::AccountView| {
        println!("server    {}", client.server());
        print_account(&account);
    })
}

pub async fn register(args: RegisterArgs) -> Result<ExitCode> {
    let client = connect_anonymously(&args.conn)?;
    let (password, generated) = password_from(args.password_stdin)?;
    let body = api::RegisterPatientRequest { username: args.username.clone(), password: password.expose().to_owned() };
    let account = client.post(&["api", "v1", "auth", "register"], &body).await?;
    let code = show(args.conn.json, account, |account: api::AccountView| {
        println!("patient account {} created (id {})", account.username, account.id);
    })?;
    if generated {
        show_generated_password(args.conn.json, &password);
    }
    Ok(code)
}

pub async fn org(args: OrgArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        OrgCommand::Create { name, kind } => {
            let created = client.post(&["api", "v1", "orgs"], &api::CreateOrgRequest { name, kind }).await?;
            show(json, created, |org: api::OrgView| {
                println!("organisation created: {} ({}), id {}", org.name, org.kind, org.id);
            })
        }
        OrgCommand::List => show(json, client.get(&["api", "v1", "orgs"]).await?, |orgs: Vec<api::OrgView>| {
            let mut table = Table::new(["ID", "KIND", "NAME"]);
            for org in orgs {
                table.row(vec![org.id, org.kind, org.name]);
            }
            table.print_or("no organisations yet");
        }),
    }
}

pub async fn account(args: AccountArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        AccountCommand::Create { username, kind, org, password_stdin } => {
            let org = match org {
                Some(org) => Some(resolve_org(&client, &org).await?),
                None => None,
            };
            let (password, generated) = password_from(password_stdin)?;
            let body = api::CreateAccountRequest { username, password: password.expose().to_owned(), kind, org };
            let created = client.post(&["api", "v1", "accounts"], &body).await?;
            let code = show(json, created, |account: api::AccountView| {
                println!("{} account {} created (id {})", account.kind, account.username, account.id);
            })?;
            if generated {
                show_generated_password(json, &password);
            }
            Ok(code)
        }
    }
}

pub async fn client(args: ClientArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    match args.command {
        ClientCommand::Register { org, public_key, algorithm } => {
            let public_key_pem = std::fs::read_to_string(&public_key)
                .with_context(|| format!("cannot read the public key {}", public_key.display()))?;
            let org = resolve_org(&client, &org).await?;
            let body = api::RegisterClientRequest { org, public_key_pem, algorithm };
            let registered = client.post(&["api", "v1", "clients"], &body).await?;
            show(args.conn.json, registered, |c: api::ClientView| {
                println!("client id       {}", c.client_id);
                println!("organisation    {}", c.org);
                println!("algorithm       {}", c.algorithm);
                println!("token endpoint  {}  (the aud of every assertion)", c.token_endpoint);
            })
        }
    }
}

pub async fn totp(args: TotpArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        TotpCommand::Enroll => {
            let enrollment = client.post_empty(&["api", "v1", "auth", "totp", "enroll"]).await?;
            show(json, enrollment, |e: api::TotpEnrollment| {
                println!("secret  {}", e.secret);
                println!("url     {}", e.otpauth_url);
                println!("Load it into your authenticator app, then run:");
                println!("  kura totp confirm --code <CODE>");
            })
        }
        TotpCommand::Confirm { secret, code, password_stdin } => {
            let password = if password_stdin {
                secrets::read_password_stdin()?
            } else {
                secrets::prompt_password(&format!("Password (to confirm) at {}: ", client.server()))?
            };
            let body = api::TotpConfirmRequest { secret, code, password: password.expose().to_owned() };
            client.post(&["api", "v1", "auth", "totp", "confirm"], &body).await?;
            done(json, "two-factor authentication is on; log in with --totp CODE from now on")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Links

pub async fn link(args: LinkArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    match args.command {
        LinkCommand::Issue { mrn } => {
            let issued = client.post(&["api", "v1", "links"], &api::CreateLinkCodeRequest { mrn }).await?;
            show(json, issued, |code: api::LinkCodeView| {
                println!("link code for {}: {}", code.mrn, code.code);
                println!("hand it to the patient; it works once, until {}", code.expires_at);
            })
        }
        LinkCommand::Redeem { code } => {
            let linked = client.post(&["api", "v1", "links", "redeem"], &api::RedeemLinkCodeRequest { code }).await?;
            show(json, linked, |link: api::LinkView| {
                println!("linked to {} ({}) as patient {}", link.institution_name, link.institution, link.mrn);
            })
        }
        LinkCommand::List => show(json, client.get(&["api", "v1", "links"]).await?, |links: Vec<api::LinkView>| {
            let mut table = Table::new(["INSTITUTION", "NAME", "MRN"]);
            for link in links {
                table.row(vec![link.institution, link.institution_name, link.mrn]);
            }
            table.print_or("no links yet");
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Records

/// `observation:12 condition:3`: how many parts of each category, in order of appearance.
fn parts_summary(parts: &[api::PartView]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for part in parts {
        let name = wire_name(&part.category);
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    comma_list(counts.iter().map(|(name, count)| format!("{name}:{count}")))
}

fn access_summary(access: &api::AccessView) -> String {
    let mut text = access.basis.clone();
    if access.anonymization != api::Anonymization::None {
        text.push_str(&format!(" ({})", wire_name(&access.anonymization)));
    }
    text
}

pub async fn records(args: RecordsArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    let names = match &args.command {
        RecordsCommand::Upload { .. }
        | RecordsCommand::Delete { .. }
        | RecordsCommand::Copy { .. }
        | RecordsCommand::SealedCopy { .. }
        | RecordsCommand::SealedCopies => OrgNames::default(),
        _ => OrgNames::load(&client, json).await,
    };
    match args.command {
        RecordsCommand::Upload { paths, patient, category } => {
            let category = category.as_deref().map(values::category).transpose().map_err(anyhow::Error::msg)?;
            upload::run(&client, &paths, &patient, category, json).await
        }
        RecordsCommand::List { labels } => {
            let query: Vec<(&str, String)> = labels.into_iter().map(|l| ("label", l)).collect();
            let list = client.get_query(&["api", "v1", "records"], &query).await?;
            show(json, list, |list: api::RecordList| {
                let mut table = Table::new(["ID", "FORMAT", "STATE", "OWNER", "ACCESS", "LABELS", "PARTS"]);
                for r in list.records {
                    table.row(vec![
                        r.id,
                        r.format,
                        r.state,
                        names.party(&r.owner),
                        access_summary(&r.access),
                        r.labels.len().to_string(),
                        parts_summary(&r.parts),
                    ]);
                }
                table.print_or("no records you may see");
            })
        }
        RecordsCommand::Show { id, out } => {
            // Read as sent, so that --out writes the content's bytes, not a re-serialisation.
            let body = client.get_bytes(&["api", "v1", "records", &id]).await?;
            let record: api::RecordView =
                serde_json::from_slice(&body).context("the server sent a record this client cannot read")?;
            if json {
                output::print_json(&serde_json::from_slice(&body)?);
            } else {
                print_record(&record, &names);
            }
            match out {
                Some(path) => {
                    let written = write_content(&record, &path)?;
                    if !json {
                        println!("content written to {} ({written} bytes)", path.display());
                    }
                }
                None if !json && (record.content.is_some() || record.content_base64.is_some()) => {
                    println!("content  {} (save it with --out FILE)", record.format);
                }
                None => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        RecordsCommand::Ledger { id } => {
            let ledger = client.get(&["api", "v1", "records", &id, "ledger"]).await?;
            show(json, ledger, |entries: Vec<api::LedgerEntryView>| {
                let mut table = Table::new(["SEQ", "AT", "EVENT", "FROM", "TO", "ACTOR", "NOTE"]);
                for e in entries {
                    table.row(vec![
                        e.seq.to_string(),
                        e.at,
                        e.event,
                        e.from_owner.as_deref().map_or_else(|| "-".to_owned(), |o| names.party(o)),
                        names.party(&e.to_owner),
                        e.actor,
                        e.note,
                    ]);
                }
                table.print_or("no ledger entries");
            })
        }
        RecordsCommand::Transfer { id, retain_view, parts, anonymize_staff, carry_over_grants } => {
            let body = api::TransferRequest {
                agreement: api::TransferAgreementBody { retain_view, parts, anonymize_staff, carry_over_grants },
            };
            let transferred = client.post(&["api", "v1", "records", &id, "transfer"], &body).await?;
            show(json, transferred, |t: api::TransferResponse| {
                println!("record {} is now owned by {} (transfer {})", t.record, names.party(&t.owner), t.transfer);
                if let Some(remainder) = t.remainder {
                    println!("the institution keeps the other parts as record {remainder}");
                }
                if let Some(grant) = t.retained_grant {
                    println!("the institution keeps a view grant: {grant}");
                }
                if !t.ended_grants.is_empty() {
                    println!(
                        "the institution's grants that ended, their copies destroyed: {}",
                        t.ended_grants.join(", ")
                    );
                }
                if !t.carried_grants.is_empty() {
                    println!("now the patient's grants: {}", t.carried_grants.join(", "));
                }
            })
        }
        RecordsCommand::Copy { id } => {
            let copied = client.post_empty(&["api", "v1", "records", &id, "copy"]).await?;
            show(json, copied, |c: api::CopyResponse| match c.expires_at {
                Some(at) => println!("copy {} made; it is destroyed at {at} or when the grant is revoked", c.id),
                None => println!("copy {} made", c.id),
            })
        }
        RecordsCommand::SealedCopy { id, out } => crate::sealed::take(&client, &id, out, json).await,
        RecordsCommand::SealedCopies => crate::sealed::list(&client, json).await,
        RecordsCommand::Move { id, destination, peer: Some(peer), peer_token, .. } => {
            let request = api::MoveRequest {
                destination,
                peer: Some(peer.clone()),
                peer_token: peer_token.map(|t| t.expose().to_owned()),
            };
            let value = client.post(&["api", "v1", "records", &id, "move"], &request).await?;
            show(json, value, |moved: api::RecordView| {
                let to = moved.locator.as_ref().map(|l| l.destination.as_str()).unwrap_or("-");
                println!("record {} moved to peer {peer}: {to}", moved.id);
                println!("It is readable there, in your account; here only its locator stays.");
            })
        }
        RecordsCommand::Move { id, destination, out, .. } => {
            let request = api::MoveRequest { destination, ..Default::default() };
            let value = client.post(&["api", "v1", "records", &id, "move"], &request).await?;
            let moved: api::RecordView = decode(value.clone())?;
            if json {
                output::print_json(&value);
            } else {
                let to = moved.locator.as_ref().map(|l| l.destination.as_str()).unwrap_or("-");
                println!("record {} moved: {to}", moved.id);
            }
            match out {
                // The record is gone here already; a failed write must still say what happened.
                Some(path) => {
                    let written = write_content(&moved, &path)
                        .with_context(|| format!("record {id} was moved, but its delivered content was not saved"))?;
                    if !json {
                        println!("delivered content written to {} ({written} bytes)", path.display());
                    }
                }
                None if !json => eprintln!("warning: the delivered content was not saved (use --out FILE or --json)"),
                None => {}
            }
            Ok(ExitCode::SUCCESS)
        }
        RecordsCommand::Delete { id } => {
            client.delete(&["api", "v1", "records", &id]).await?;
            done(json, &format!("record {id} deleted; its data key is destroyed"))
        }
    }
}

fn print_record(r: &api::RecordView, names: &OrgNames) {
    println!("id           {}", r.id);
    println!("format       {}", r.format);
    println!("state        {}", r.state);
    println!("owner        {}", names.party(&r.owner));
    println!("institution  {}", names.org(&r.institution));
    println!("created      {}", r.created_at);
    println!("provenance   {}", r.provenance);
    if let Some(from) = &r.derived_from {
        println!("derived from {from}");
    }
    if let Some(access) = &r.access {
        let mut text = access_summary(access);
        if let Some(grant) = &access.grant {
            text.push_str(&format!(", grant {grant}"));
        }
        if let Some(until) = &access.expires_at {
            text.push_str(&format!(", until {until}"));
        }
        println!("access       {text}");
    }
    println!("parts        {}", parts_summary(&r.parts));
    if !r.labels.is_empty() {
        println!("labels       {}", r.labels.join(" "));
    }
    if let Some(locator) = &r.locator {
        println!("moved        to {} at {} by {}", locator.destination, locator.moved_at, locator.ordered_by);
    }
    if let Some(withheld) = &r.withheld {
        println!("withheld     {withheld}");
    }
}

/// Writes a record's content to `path` exactly as the server sent it: FHIR as its JSON text,
/// other formats as their bytes.
fn write_content(record: &api::RecordView, path: &Path) -> Result<usize> {
    let bytes = content_bytes(record)?;
    std::fs::write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(bytes.len())
}

fn content_bytes(record: &api::RecordView) -> Result<Vec<u8>> {
    if let Some(content) = &record.content {
        return Ok(content.get().as_bytes().to_vec());
    }
    if let Some(encoded) = &record.content_base64 {
        return base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .context("the server sent content that is not valid base64");
    }
    match (&record.withheld, &record.locator) {
        (Some(why), _) => bail!("no content to write: {why}"),
        (None, Some(locator)) => bail!("no content to write: the record was moved to {}", locator.destination),
        (None, None) => bail!("no content to write: the server sent none"),
    }
}

// ---------------------------------------------------------------------------------------------
// Grants and delegations

/// A grant's scope for people: `all` when it covers every category.
pub fn scope_summary(scope: &[api::Category]) -> String {
    if scope.len() == values::CATEGORIES.len() { "all".to_owned() } else { comma_list(scope.iter().map(wire_name)) }
}

fn grant_state(g: &api::GrantView) -> &'static str {
    if g.revoked_at.is_some() {
        "revoked"
    } else if g.active {
        "active"
    } else {
        "inactive"
    }
}

pub async fn grant(args: GrantArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    let names = match &args.command {
        GrantCommand::Revoke { .. } => OrgNames::default(),
        _ => OrgNames::load(&client, json).await,
    };
    match args.command {
        GrantCommand::Create(create) => {
            let body = grant_request(&client, *create).await?;
            let created = client.post(&["api", "v1", "grants"], &body).await?;
            show(json, created, |g: api::GrantView| {
                println!(
                    "grant {} created: {} may {} ({})",
                    g.id,
                    g.grantee,
                    comma_list(g.actions.iter().map(wire_name)),
                    comma_list(g.scope.iter().map(wire_name))
                );
                println!("from {} until {}", g.not_before, or_dash(g.expires_at.as_deref()));
            })
        }
        GrantCommand::List => show(json, client.get(&["api", "v1", "grants"]).await?, |list: api::GrantList| {
            let mut table =
                Table::new(["ID", "STATE", "OWNER", "GRANTEE", "COVERS", "SCOPE", "ACTIONS", "ANONYMIZATION", "UNTIL"]);
            for g in list.grants {
                let covers = match &g.records {
                    Some(ids) => format!("{} record(s)", ids.len()),
                    None => format!("labels {}", comma_list(&g.labels)),
                };
                table.row(vec![
                    g.id.clone(),
                    grant_state(&g).to_owned(),
                    names.party(&g.owner),
                    names.party(&g.grantee),
                    covers,
                    scope_summary(&g.scope),
                    comma_list(g.actions.iter().map(wire_name)),
                    wire_name(&g.anonymization),
                    or_dash(g.expires_at.as_deref()),
                ]);
            }
            table.print_or("no grants");
        }),
        GrantCommand::Revoke { id } => {
            client.delete(&["api", "v1", "grants", &id]).await?;
            done(json, &format!("grant {id} revoked"))
        }
    }
}

async fn grant_request(client: &Client, args: GrantCreateArgs) -> Result<api::CreateGrantRequest> {
    let grantee = match (args.to_org, args.to_account) {
        (Some(org), _) => api::PartyRef::Org(resolve_org(client, &org).await?),
        (None, Some(account)) => api::PartyRef::Account(account),
        (None, None) => bail!("give --to-org or --to-account"),
    };
    Ok(api::CreateGrantRequest {
        grantee,
        records: (!args.records.is_empty()).then_some(args.records),
        labels: args.labels,
        scope: args.scope,
        actions: args.actions,
        anonymization: args.anonymization,
        not_before: args.not_before,
        expires_at: values::expiry(args.days, args.expires_at)?,
        purpose: args.purpose,
    })
}

pub async fn delegation(args: DelegationArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, None)?;
    let json = args.conn.json;
    match args.command {
        DelegationCommand::Create { agent, powers, patient, kind, expires_at } => {
            let kind = kind.unwrap_or_else(|| if patient.is_some() { "guardian" } else { "appointed" }.to_owned());
            let body = api::CreateDelegationRequest { agent, patient, kind, powers, expires_at };
            let created = client.post(&["api", "v1", "delegations"], &body).await?;
            show(json, created, |d: api::DelegationView| {
                println!(
                    "delegation {} ({}): account {} acts for patient {} with {}",
                    d.id,
                    d.kind,
                    d.agent,
                    d.patient,
                    comma_list(d.powers.iter().map(wire_name))
                );
                if d.awaiting_acceptance {
                    println!("it takes effect once the patient accepts it (kura delegation accept {})", d.id);
                } else {
                    println!("the agent sends --act-as {} to act for the patient", d.patient);
                }
            })
        }
        DelegationCommand::List => {
            show(json, client.get(&["api", "v1", "delegations"]).await?, |list: api::DelegationList| {
                let mut table = Table::new(["ID", "KIND", "ACTIVE", "AGENT", "PATIENT", "POWERS", "UNTIL"]);
                for d in list.delegations {
                    table.row(vec![
                        d.id,
                        d.kind,
                        match (d.active, d.awaiting_acceptance) {
                            (true, _) => "yes",
                            (false, true) => "awaiting acceptance",
                            (false, false) => "no",
                        }
                        .to_owned(),
                        d.agent,
                        d.patient,
                        comma_list(d.powers.iter().map(wire_name)),
                        or_dash(d.expires_at.as_deref()),
                    ]);
                }
                table.print_or("no delegations");
            })
        }
        DelegationCommand::Accept { id } => {
            let accepted = client.post(&["api", "v1", "delegations", &id, "accept"], &serde_json::json!({})).await?;
            show(json, accepted, |d: api::DelegationView| {
                println!("delegation {} accepted: account {} may now act for you", d.id, d.agent);
            })
        }
        DelegationCommand::Revoke { id } => {
            client.delete(&["api", "v1", "delegations", &id]).await?;
            done(json, &format!("delegation {id} ended"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Audit

pub async fn audit(args: AuditArgs) -> Result<ExitCode> {
    let client = connect(&args.conn, Some(&args.act_as))?;
    let json = args.conn.json;
    match args.command {
        AuditCommand::List { after, limit } => {
            let mut query = vec![("after", after.to_string())];
            if let Some(limit) = limit {
                query.push(("limit", limit.to_string()));
            }
            let list = client.get_query(&["api", "v1", "audit"], &query).await?;
            show(json, list, |list: api::AuditList| {
                let mut table = Table::new(["SEQ", "AT", "ACTOR", "FOR", "ACTION", "OUTCOME", "RECORD", "DETAIL"]);
                for e in list.entries {
                    let actor = if e.actor_name.is_empty() { e.actor } else { e.actor_name };
                    table.row(vec![
                        e.seq.to_string(),
                        e.at,
                        actor,
                        or_dash(Some(&e.on_behalf_of)),
                        e.action,
                        e.outcome,
                        or_dash(Some(&e.record)),
                        e.detail,
                    ]);
                }
                table.print_or("no audit entries");
            })
        }
        AuditCommand::Verify => {
            let value = client.get(&["api", "v1", "audit", "verify"]).await?;
            let verification: api::AuditVerification = decode(value.clone())?;
            if json {
                output::print_json(&value);
            } else if verification.ok {
                println!("the audit chain is intact ({} entries checked)", verification.entries_checked);
            } else {
                println!(
                    "the audit chain is BROKEN at entry {}: {} ({} entries before it check out)",
                    verification.broken_at_seq.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                    verification.reason.as_deref().unwrap_or("no reason given"),
                    verification.entries_checked
                );
            }
            Ok(if verification.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(category: api::Category) -> api::PartView {
        api::PartView { index: 0, category, resource_type: String::new() }
    }

    #[test]
    fn parts_are_counted_per_category_in_order() {
        let parts = [
            part(api::Category::Other),
            part(api::Category::Observation),
            part(api::Category::Observation),
            part(api::Category::PatientEntered),
        ];
        assert_eq!(parts_summary(&parts), "other:1,observation:2,patient_entered:1");
        assert_eq!(parts_summary(&[]), "-");
    }

    fn record_with(content: Option<Value>, base64: Option<&str>, withheld: Option<&str>) -> api::RecordView {
        api::RecordView {
            id: "r".into(),
            owner: "account:a".into(),
            institution: "i".into(),
            format: "fhir".into(),
            state: "active".into(),
            parts: Vec::new(),
            labels: Vec::new(),
            created_at: "2026-01-01T00:00:00Z".into(),
            derived_from: None,
            provenance: String::new(),
            access: None,
            content: content.map(|c| serde_json::value::to_raw_value(&c).unwrap()),
            content_base64: base64.map(str::to_owned),
            withheld: withheld.map(str::to_owned),
            locator: None,
        }
    }

    #[test]
    fn content_is_written_as_served_or_decoded_bytes() {
        // The FHIR text as the server sent it: spacing and decimals (1.50, 1e2) kept.
        let served = r#"{"resourceType": "Observation", "valueQuantity": {"value": 1.50}, "x": 1e2}"#;
        let record: api::RecordView = serde_json::from_str(&format!(
            r#"{{"id": "r", "owner": "account:a", "institution": "i", "format": "fhir", "state": "active",
                "parts": [], "labels": [], "created_at": "2026-01-01T00:00:00Z", "provenance": "", "content": {served}}}"#
        ))
        .unwrap();
        assert_eq!(content_bytes(&record).unwrap(), served.as_bytes());
        let pdf = record_with(None, Some("JVBERi0xLjQ="), None);
        assert_eq!(content_bytes(&pdf).unwrap(), b"%PDF-1.4");
        let withheld = record_with(None, None, Some("no image parts in scope"));
        let message = content_bytes(&withheld).unwrap_err().to_string();
        assert!(message.contains("no image parts in scope"), "{message}");
    }
}
