//! `GET /users`, `GET /users/{id}`: the Net2 users of the directory — id, name, status, never
//! how they get in (the directory has no field for PINs, phones, cards or emails). Users are
//! managed in Net2: `POST`, `PUT` and `DELETE` answer 405 with `Allow: GET`.

use super::{ListQuery, Page, Pagination, check_site};
use crate::directory::DirectoryUser;
use crate::web::{Detail, Web, detail};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// `active | inactive`.
#[derive(Serialize, Deserialize, utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum UserStatus {
    Active,
    Inactive,
}

/// A Net2 user: who, never how they get in.
#[derive(Serialize, Deserialize, utoipa::ToSchema, Debug, Clone, PartialEq)]
pub(crate) struct User {
    /// Net2's user id.
    id: String,
    name: Option<String>,
    /// Within their Net2 activate / expiry dates when the list was fetched; null when Net2
    /// gave neither date.
    status: Option<UserStatus>,
}

impl From<DirectoryUser> for User {
    fn from(u: DirectoryUser) -> User {
        User {
            id: u.id.to_string(),
            name: u.name,
            status: u.active.map(|a| {
                if a {
                    UserStatus::Active
                } else {
                    UserStatus::Inactive
                }
            }),
        }
    }
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct UserList {
    data: Vec<User>,
    pagination: Pagination,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct UserAnswer {
    data: User,
}

/// The Net2 users (names only), by id. Net2 users belong to every site: a known
/// `property_id` lists them all.
#[utoipa::path(get, path = "/api/access-control/users", tag = "access-control",
    params(ListQuery),
    responses((status = 200, body = UserList), (status = 400, body = Detail),
        (status = 401, body = Detail), (status = 404, description = "unknown property_id", body = Detail)))]
pub(in crate::web) async fn list(State(w): State<Web>, Query(q): Query<ListQuery>) -> Response {
    let page = match Page::of(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if let Err(r) = check_site(&w, q.property_id.as_deref()) {
        return r;
    }
    let users: Vec<User> = w.directory.users().into_iter().map(User::from).collect();
    let (data, pagination) = page.cut(users);
    axum::Json(UserList { data, pagination }).into_response()
}

/// One Net2 user.
#[utoipa::path(get, path = "/api/access-control/users/{id}", tag = "access-control",
    params(("id" = String, Path, description = "Net2 user id")),
    responses((status = 200, body = UserAnswer), (status = 401, body = Detail),
        (status = 404, body = Detail)))]
pub(in crate::web) async fn one(State(w): State<Web>, Path(id): Path<String>) -> Response {
    match id.parse::<i64>().ok().and_then(|n| w.directory.user(n)) {
        Some(u) => axum::Json(UserAnswer { data: u.into() }).into_response(),
        None => detail(StatusCode::NOT_FOUND, format!("no Net2 user {id:?}")),
    }
}

fn managed_in_net2() -> Response {
    let mut r = detail(StatusCode::METHOD_NOT_ALLOWED, "users are managed in Net2");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    r
}

/// Not here: users are managed in Net2 (405, `Allow: GET`).
#[utoipa::path(post, path = "/api/access-control/users", tag = "access-control",
    responses((status = 401, body = Detail),
        (status = 405, description = "users are managed in Net2", body = Detail,
            headers(("Allow" = String, description = "GET")))))]
pub(in crate::web) async fn create() -> Response {
    managed_in_net2()
}

/// Not here: users are managed in Net2 (405, `Allow: GET`).
#[utoipa::path(put, path = "/api/access-control/users/{id}", tag = "access-control",
    params(("id" = String, Path, description = "Net2 user id")),
    responses((status = 401, body = Detail),
        (status = 405, description = "users are managed in Net2", body = Detail,
            headers(("Allow" = String, description = "GET")))))]
pub(in crate::web) async fn update(Path(_id): Path<String>) -> Response {
    managed_in_net2()
}

/// Not here: users are managed in Net2 (405, `Allow: GET`).
#[utoipa::path(delete, path = "/api/access-control/users/{id}", tag = "access-control",
    params(("id" = String, Path, description = "Net2 user id")),
    responses((status = 401, body = Detail),
        (status = 405, description = "users are managed in Net2", body = Detail,
            headers(("Allow" = String, description = "GET")))))]
pub(in crate::web) async fn remove(Path(_id): Path<String>) -> Response {
    managed_in_net2()
}
