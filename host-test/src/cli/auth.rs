//! `host-test auth` and `host-test disconnect`: connecting an account with OAuth 2 (PKCE, offline
//! access) and letting go of it again. The protocol pieces are in `crate::oauth`; this file is
//! the conversation with the user. Nothing printed here ever contains a token or the client
//! secret.

use std::io::{BufRead, Write};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Target, open, progress_bar, sync_phrase, usage};
use crate::oauth::{
    AuthorizationRequest, CallbackListener, ClientCredentials, parse_pasted, redirect_uri,
};

#[derive(clap::Args)]
pub(super) struct AuthArgs {
    #[command(flatten)]
    pub(super) target: Target,
    /// The client id (app key) of your app at the source; DROPBOX_CLIENT_ID when absent.
    #[arg(long)]
    pub(super) client_id: Option<String>,
    /// The client secret of your app; DROPBOX_CLIENT_SECRET when absent (better: it keeps
    /// the secret out of the process list). Without one, PKCE alone authenticates the exchange.
    #[arg(long)]
    pub(super) client_secret: Option<String>,
    /// The base of the redirect URI registered for the app; the manifest's redirect path is
    /// appended. The listener binds to its host and port (port 0: any free port).
    #[arg(long, default_value = crate::oauth::DEFAULT_REDIRECT_BASE)]
    pub(super) redirect_base: String,
    /// Do not start the first sync after connecting.
    #[arg(long)]
    pub(super) no_sync: bool,
    /// Do not listen for the redirect: paste the redirect URL (or the bare code) instead.
    #[arg(long)]
    pub(super) no_listen: bool,
    /// Do not try to open a browser; only print the URL.
    #[arg(long)]
    pub(super) no_browser: bool,
    /// How long to wait for the redirect, in seconds.
    #[arg(long, default_value_t = 300)]
    pub(super) timeout: u64,
}

pub(super) fn auth(args: AuthArgs) -> Result<()> {
    let host = open(&args.target)?;
    let name = host.manifest().display_name.clone();
    // A connector without OAuth is connected with a token given directly.
    let Some(oauth) = host.manifest().oauth.clone() else {
        return Err(usage(format!(
            "{name} does not use OAuth: store an access token with `host-test connect --access-token ...`"
        )));
    };
    let client_id = args
        .client_id
        .or_else(|| std::env::var("DROPBOX_CLIENT_ID").ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| usage("give --client-id (the app key) or set DROPBOX_CLIENT_ID"))?;
    let client_secret = args
        .client_secret
        .or_else(|| std::env::var(CLIENT_SECRET_ENV).ok())
        .filter(|s| !s.is_empty());
    let client = ClientCredentials {
        client_id,
        client_secret,
    };
    let tenant = &args.target.tenant;
    let services = host.services_for(tenant)?;

    // Bind before printing the URL: the redirect URI names the port actually in use.
    let listener = if args.no_listen {
        None
    } else {
        Some(CallbackListener::bind(&args.redirect_base, &oauth.redirect_path)?.named(&name))
    };
    let redirect = match &listener {
        Some(l) => l.redirect_uri().to_string(),
        None => redirect_uri(&args.redirect_base, &oauth.redirect_path)?,
    };
    let request =
        AuthorizationRequest::new(&oauth, &client.client_id, &redirect, &services.policy)?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Authorize access to your {name} account for tenant {tenant}."
    )?;
    writeln!(out, "The app must list this redirect URI: {redirect}")?;
    writeln!(out, "Open this URL in a browser and allow access:")?;
    writeln!(out)?;
    writeln!(out, "{}", request.url)?;
    writeln!(out)?;
    out.flush()?;

    let code = match &listener {
        Some(listener) => {
            if !args.no_browser {
                open_browser(&request.url);
            }
            writeln!(
                out,
                "Waiting up to {} s for {name} to redirect to {redirect} ...",
                args.timeout
            )?;
            out.flush()?;
            listener.wait(&request.state, Duration::from_secs(args.timeout))?
        }
        None => {
            writeln!(
                out,
                "After allowing access, paste the address the browser was sent to (or the code shown), then press Enter:"
            )?;
            out.flush()?;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the pasted redirect URL")?;
            parse_pasted(&line, &request.state)?
        }
    };

    let token_url = services.policy.rewrite(&oauth.token_url);
    let token = request.exchange(&services.http, &token_url, &client, &code)?;
    let missing = token.missing_scopes(&oauth.scopes);
    if !missing.is_empty() {
        eprintln!(
            "warning: the token lacks the scopes {}; enable them in the app's permissions and authorize again",
            missing.join(", ")
        );
    }
    if token.refresh_token.is_none() {
        eprintln!(
            "warning: no refresh token was issued (offline access refused?); the connection ends when the access token expires"
        );
    }
    let account = host
        .connect_checked(tenant, token.into_credentials(&client))
        .with_context(|| {
            format!("the connection test of tenant {tenant} failed; the tokens were not stored")
        })?
        .value;
    writeln!(
        out,
        "connected tenant {tenant} to {} ({})",
        account.email, account.external_id
    )?;
    out.flush()?;
    drop(out);

    if args.no_sync {
        return Ok(());
    }
    println!("First full sync of tenant {tenant}:");
    let outcome = host.sync(tenant, Some(progress_bar()), None);
    let outcome = outcome.with_context(|| format!("the first sync of tenant {tenant} failed"))?;
    let s = &outcome.value;
    let kind = sync_phrase(s.kind);
    println!(
        "{kind} of {tenant}: {} pages, {} entries, {} created, {} API calls, {:.2}s{}",
        s.pages,
        s.entries,
        s.created,
        s.api_calls,
        outcome.elapsed.as_secs_f64(),
        if s.interrupted {
            " (interrupted; the next sync resumes)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The environment variables this CLI reads secrets from: the URL opener (and the browser it
/// starts, which outlives us) is not given them.
fn secret_variables() -> impl Iterator<Item = &'static str> {
    super::TOKEN_VARIABLES
        .into_iter()
        .chain([CLIENT_SECRET_ENV, crate::secrets::SECRET_KEY_ENV])
}

/// The variable `--client-secret` defaults to.
const CLIENT_SECRET_ENV: &str = "DROPBOX_CLIENT_SECRET";

/// Best effort: a desktop's URL opener (`xdg-open`, found on PATH), if there is one. Failing is
/// fine, the URL is printed.
fn open_browser(url: &str) {
    let mut opener = Process::new("xdg-open");
    for name in secret_variables() {
        opener.env_remove(name);
    }
    let spawned = opener
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = spawned {
        // Reap it in the background so it never lingers as a zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
}

/// Revoke the tenant's token at the source (the component's `cleanup`) and delete the stored
/// credentials. The records stay; `status` then shows the tenant as not connected.
pub(super) fn disconnect(target: Target, json: bool) -> Result<()> {
    let host = open(&target)?;
    let name = host.manifest().display_name.clone();
    let tenant = &target.tenant;
    let said = |had_credentials: bool, revoked: bool, words: String| {
        if json {
            println!(
                "{}",
                serde_json::json!({"tenant": tenant, "had_credentials": had_credentials, "revoked": revoked})
            );
        } else {
            println!("{words}");
        }
    };
    if host.store().credentials(tenant)?.is_none() {
        said(
            false,
            false,
            format!("tenant {tenant} has no stored credentials; nothing to disconnect"),
        );
        return Ok(());
    }
    let revoked = host.cleanup(tenant);
    // The user asked to let go of the account: the local credentials go whatever the source
    // said.
    host.store().delete_credentials(tenant)?;
    match revoked {
        Ok(_) => {
            said(
                true,
                true,
                format!(
                    "revoked the token at {name} and deleted the stored credentials of tenant {tenant}"
                ),
            );
            Ok(())
        }
        Err(e) => bail!(
            "deleted the stored credentials of tenant {tenant}, but revoking the token at {name} failed: {e}; \
             remove the app from the account's connected apps at {name}"
        ),
    }
}
