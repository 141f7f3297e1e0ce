//! `POST /api/auth/login` and `POST /api/auth/change-password` (seed 004's shapes).

use super::accounts::Refused;
use super::{Caller, Detail, Status, Web, detail};
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Login {
    username: String,
    #[serde(deserialize_with = "crate::web::secret_text::required")]
    password: String,
}

/// Seed 004's `{"token"}`, with the account's role and the token's lifetime.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(super) struct LoginToken {
    token: String,
    role: String,
    /// Seconds.
    expires_in: u64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangePassword {
    #[serde(deserialize_with = "crate::web::secret_text::required")]
    old_password: String,
    #[serde(deserialize_with = "crate::web::secret_text::required")]
    new_password: String,
}

fn refused(r: Refused) -> Response {
    match r {
        Refused::Credentials => detail(StatusCode::UNAUTHORIZED, "wrong username or password"),
        Refused::Throttled(secs) => {
            let mut res = detail(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed logins: retry in {secs} s"),
            );
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            res
        }
        Refused::Invalid(why) => detail(StatusCode::UNPROCESSABLE_ENTITY, why),
        Refused::Internal(why) => {
            tracing::error!(error = %why, "password change failed");
            detail(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
        }
    }
}

/// Log in with a `web.users` account.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", security(()),
    request_body = Login,
    responses((status = 200, body = LoginToken), (status = 401, body = Detail),
        (status = 422, body = Detail), (status = 429, body = Detail)))]
pub(super) async fn login(State(w): State<Web>, axum::Json(l): axum::Json<Login>) -> Response {
    let Some(web) = w.config().web.clone() else {
        return detail(StatusCode::NOT_FOUND, "web is not configured");
    };
    match w.accounts.login(&l.username, &l.password).await {
        Ok(role) => match w.signer.login_token(
            &l.username,
            role,
            w.accounts.fingerprint(&l.username).unwrap_or_default(),
            web.session_ttl.get(),
        ) {
            Ok(token) => {
                tracing::info!(user = %l.username, role = role.as_str(), "API login");
                axum::Json(LoginToken {
                    token,
                    role: role.as_str().into(),
                    expires_in: web.session_ttl.get().as_secs(),
                })
                .into_response()
            }
            Err(e) => detail(StatusCode::NOT_FOUND, e.to_string()),
        },
        Err(r) => {
            tracing::info!(user = %l.username, "API login refused");
            refused(r)
        }
    }
}

/// Change the caller's own password (a login token's account).
#[utoipa::path(post, path = "/api/auth/change-password", tag = "auth",
    request_body = ChangePassword,
    responses((status = 200, body = Status), (status = 401, body = Detail),
        (status = 403, body = Detail), (status = 422, body = Detail), (status = 429, body = Detail)))]
pub(super) async fn change_password(
    State(w): State<Web>,
    Extension(caller): Extension<Caller>,
    axum::Json(c): axum::Json<ChangePassword>,
) -> Response {
    match w
        .accounts
        .change(&caller.name, &c.old_password, &c.new_password)
        .await
    {
        Ok(()) => {
            tracing::info!(user = %caller.name, "API password changed");
            axum::Json(Status {
                status: "ok".into(),
            })
            .into_response()
        }
        // A token without an account (`gatehouse token`) has no password to change.
        Err(Refused::Credentials) => detail(
            StatusCode::FORBIDDEN,
            "wrong old password, or this token is not an account's",
        ),
        Err(r) => refused(r),
    }
}
