//! Completes the generated OpenAPI document: every error answer a route
//! can give, and the patterns of ids, so that a schema-driven client or
//! fuzzer meets no undocumented status.

use utoipa::openapi::path::{Operation, Parameter};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{Ref, RefOr, ResponseBuilder};

/// Tenant, owner, pool class and deployment ids.
pub const ID_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";
/// Owner token ids (`GET /api/tokens`).
pub const TOKEN_ID_PATTERN: &str = "^[0-9a-f]{16}$";

/// Adds the error answers of each route (by what the route does) and the
/// patterns of its path parameters.
pub struct ErrorAnswers;

impl utoipa::Modify for ErrorAnswers {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        for (path, item) in api.paths.paths.iter_mut() {
            let ops = [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("delete", &mut item.delete),
                ("patch", &mut item.patch),
                ("head", &mut item.head),
                ("options", &mut item.options),
            ];
            for (method, op) in ops {
                if let Some(op) = op.as_mut() {
                    complete(path, method, op);
                }
            }
        }
    }
}

/// What can go wrong on `method path`, as (status, why).
pub fn error_answers(
    path: &str,
    method: &str,
    authed: bool,
    body: bool,
) -> Vec<(u16, &'static str)> {
    let mut out = Vec::new();
    if !authed {
        return out;
    }
    out.push((401, "no token, or an unknown or revoked one"));
    let admin_only = path.starts_with("/api/tokens")
        || path == "/api/events"
        || (path.starts_with("/api/pool/")
            && !path.starts_with("/api/pool/bot/")
            && !(path == "/api/pool/classes" && method == "get"));
    if admin_only || (path == "/api/tenants" && method == "post") {
        out.push((
            403,
            "an owner token on an admin route, or for another owner",
        ));
    }
    if body || path.contains('{') || path.contains("logs") || path == "/api/events" {
        out.push((
            400,
            "malformed JSON, a field or query out of its range, an invalid id",
        ));
    }
    if body {
        out.push((413, "body over 64 KiB"));
    }
    let class = path.starts_with("/api/pool/classes");
    if (path.contains('{') && !(class && method == "put"))
        || (path == "/api/tenants" && method == "post")
    {
        out.push((404, "no such tenant, token or class (or another owner's)"));
    }
    if path == "/api/tenants" && method == "post" {
        out.push((409, "the id is taken by another spec of the caller's"));
    }
    if class && method == "delete" {
        out.push((409, "the class still has pools"));
    }
    if (path.starts_with("/api/tenants") || path.starts_with("/api/pool/")) && !class {
        out.push((503, "a pool or its agent does not answer"));
    }
    out
}

fn complete(path: &str, method: &str, op: &mut Operation) {
    let authed = op.security.is_some();
    let body = op.request_body.is_some();
    for (status, why) in error_answers(path, method, authed, body) {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                RefOr::T(
                    ResponseBuilder::new()
                        .description(why)
                        .content(
                            "application/json",
                            utoipa::openapi::content::Content::new(Some(Ref::from_schema_name(
                                "ErrorDoc",
                            ))),
                        )
                        .build(),
                )
            });
    }
    for p in op.parameters.iter_mut().flatten() {
        pattern(path, p);
    }
}

fn pattern(path: &str, p: &mut Parameter) {
    let pat = match p.name.as_str() {
        "id" if path.starts_with("/api/tokens") => TOKEN_ID_PATTERN,
        "id" | "instanceId" | "tenant" | "name" | "owner" => ID_PATTERN,
        _ => return,
    };
    p.schema = Some(RefOr::T(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pat))
            .into(),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_follow_what_a_route_does() {
        let codes =
            |p, m, a, b| -> Vec<u16> { error_answers(p, m, a, b).iter().map(|x| x.0).collect() };
        assert_eq!(
            codes("/api/tenants", "post", true, true),
            [401, 403, 400, 413, 404, 409, 503]
        );
        assert_eq!(
            codes("/api/tenants/{id}", "get", true, false),
            [401, 400, 404, 503]
        );
        assert_eq!(
            codes("/api/pool/status", "get", true, false),
            [401, 403, 503]
        );
        assert!(codes("/healthz", "get", false, false).is_empty());
    }
}
