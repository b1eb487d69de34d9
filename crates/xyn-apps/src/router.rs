//! The app router: the routes and middleware an app registered (`app.get(pattern, fn)`,
//! `app.use(method, pattern, mw)`), matched in the node.
//!
//! Precedence is deterministic: segment by segment, a static segment beats a parameter
//! (`:id`), which beats a wildcard (`*`, the rest of the path); between equal shapes the
//! route registered first wins. A path no route matches is a 404; a path some route
//! matches under other methods is a 405 whose `Allow` lists them. `HEAD` is answered by
//! the `GET` route; `app.all` registers a route for every method (`*`). Middleware (`app.use`) runs in registration order for every request
//! whose method it names (or `*`) and whose path its pattern matches (`/api/*`: `/api`
//! and everything under it; `/*` or `*`: everything).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One registration as the app reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// `route` or `use`.
    pub kind: String,
    pub method: String,
    pub pattern: String,
    /// The guest's handle for the function.
    pub id: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Static(String),
    Param(String),
    Wildcard,
}

#[derive(Clone, Debug)]
struct Compiled {
    method: String,
    segs: Vec<Seg>,
    id: u64,
}

/// What a request resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A route matched: its handler, the path parameters (`*` holds a wildcard's rest).
    Handler {
        handler: u64,
        params: BTreeMap<String, String>,
    },
    NotFound,
    /// The path matches routes of other methods only (sorted, `HEAD` added beside `GET`).
    MethodNotAllowed {
        allow: Vec<String>,
    },
}

/// The compiled routes and middleware of one app.
#[derive(Clone, Debug, Default)]
pub struct Router {
    routes: Vec<Compiled>,
    uses: Vec<Compiled>,
}

fn compile(pattern: &str) -> Result<Vec<Seg>, String> {
    if !pattern.starts_with('/') && pattern != "*" {
        return Err(format!("pattern {pattern:?} must start with /"));
    }
    let mut segs = Vec::new();
    let parts: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
    let n = parts.len();
    for (i, p) in parts.into_iter().enumerate() {
        if p == "*" {
            if i + 1 != n {
                return Err(format!("pattern {pattern:?}: * must be the last segment"));
            }
            segs.push(Seg::Wildcard);
        } else if let Some(name) = p.strip_prefix(':') {
            if name.is_empty() {
                return Err(format!("pattern {pattern:?}: a parameter needs a name"));
            }
            segs.push(Seg::Param(name.to_string()));
        } else {
            segs.push(Seg::Static(p.to_string()));
        }
    }
    Ok(segs)
}

/// Matches `segs` against the path's segments; the parameters when it matches.
fn matches(segs: &[Seg], path: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for (i, s) in segs.iter().enumerate() {
        match s {
            Seg::Wildcard => {
                params.insert("*".to_string(), path.get(i..).unwrap_or(&[]).join("/"));
                return Some(params);
            }
            Seg::Static(want) => {
                if path.get(i) != Some(&want.as_str()) {
                    return None;
                }
            }
            Seg::Param(name) => match path.get(i) {
                Some(v) if !v.is_empty() => {
                    params.insert(name.clone(), (*v).to_string());
                }
                _ => return None,
            },
        }
    }
    (segs.len() == path.len()).then_some(params)
}

/// The precedence key of a route: per segment 0 static, 1 parameter, 2 wildcard.
fn rank(segs: &[Seg]) -> Vec<u8> {
    segs.iter()
        .map(|s| match s {
            Seg::Static(_) => 0,
            Seg::Param(_) => 1,
            Seg::Wildcard => 2,
        })
        .collect()
}

fn path_segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('/').split('/').collect()
}

impl Router {
    /// Compiles what the app registered; a malformed pattern is an error naming it.
    pub fn new(regs: &[Registration]) -> Result<Router, String> {
        let mut r = Router::default();
        for reg in regs {
            let c = Compiled {
                method: reg.method.to_ascii_uppercase(),
                segs: compile(&reg.pattern)?,
                id: reg.id,
            };
            match reg.kind.as_str() {
                "route" => r.routes.push(c),
                "use" => r.uses.push(c),
                other => return Err(format!("unknown registration kind {other:?}")),
            }
        }
        // A stable sort keeps registration order between routes of equal rank.
        r.routes.sort_by_key(|c| rank(&c.segs));
        Ok(r)
    }

    /// How many routes and middleware.
    pub fn len(&self) -> (usize, usize) {
        (self.routes.len(), self.uses.len())
    }

    /// The route for `method` and `path` (the path without its query).
    pub fn resolve(&self, method: &str, path: &str) -> Resolved {
        let segs = path_segments(path);
        let want = if method == "HEAD" { "GET" } else { method };
        let mut allow: Vec<String> = Vec::new();
        for r in &self.routes {
            if let Some(params) = matches(&r.segs, &segs) {
                if r.method == want || r.method == "*" {
                    return Resolved::Handler {
                        handler: r.id,
                        params,
                    };
                }
                if !allow.contains(&r.method) {
                    allow.push(r.method.clone());
                }
            }
        }
        if allow.is_empty() {
            return Resolved::NotFound;
        }
        if allow.iter().any(|m| m == "GET") {
            allow.push("HEAD".into());
        }
        allow.sort();
        Resolved::MethodNotAllowed { allow }
    }

    /// The middleware that runs for `method` and `path`, in registration order.
    pub fn chain(&self, method: &str, path: &str) -> Vec<u64> {
        let segs = path_segments(path);
        self.uses
            .iter()
            .filter(|u| u.method == "*" || u.method == method)
            .filter(|u| match u.segs.as_slice() {
                [Seg::Wildcard] => true,
                [Seg::Static(s)] if s == "*" => true,
                s => {
                    matches(s, &segs).is_some()
                        || (matches!(s.last(), Some(Seg::Wildcard))
                            && matches(&s[..s.len() - 1], &segs).is_some())
                }
            })
            .map(|u| u.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reg(kind: &str, method: &str, pattern: &str, id: u64) -> Registration {
        Registration {
            kind: kind.into(),
            method: method.into(),
            pattern: pattern.into(),
            id,
        }
    }

    fn handler(r: &Resolved) -> Option<u64> {
        match r {
            Resolved::Handler { handler, .. } => Some(*handler),
            _ => None,
        }
    }

    #[test]
    fn static_beats_param_beats_wildcard_whatever_the_order() {
        let r = Router::new(&[
            reg("route", "GET", "/users/*", 1),
            reg("route", "GET", "/users/:id", 2),
            reg("route", "GET", "/users/me", 3),
        ])
        .unwrap();
        assert_eq!(handler(&r.resolve("GET", "/users/me")), Some(3));
        assert_eq!(handler(&r.resolve("GET", "/users/42")), Some(2));
        assert_eq!(handler(&r.resolve("GET", "/users/42/posts")), Some(1));
        match r.resolve("GET", "/users/42") {
            Resolved::Handler { params, .. } => assert_eq!(params["id"], "42"),
            other => panic!("{other:?}"),
        }
        match r.resolve("GET", "/users/a/b") {
            Resolved::Handler { params, .. } => assert_eq!(params["*"], "a/b"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn equal_shapes_resolve_in_registration_order() {
        let r = Router::new(&[
            reg("route", "GET", "/a/:x", 1),
            reg("route", "GET", "/a/:y", 2),
        ])
        .unwrap();
        assert_eq!(handler(&r.resolve("GET", "/a/1")), Some(1));
        // The earlier segment decides before the later one.
        let r = Router::new(&[
            reg("route", "GET", "/:a/b", 1),
            reg("route", "GET", "/a/:b", 2),
        ])
        .unwrap();
        assert_eq!(handler(&r.resolve("GET", "/a/b")), Some(2));
    }

    #[test]
    fn not_found_and_method_not_allowed_with_allow() {
        let r = Router::new(&[
            reg("route", "GET", "/notes", 1),
            reg("route", "POST", "/notes", 2),
            reg("route", "DELETE", "/notes/:id", 3),
        ])
        .unwrap();
        assert_eq!(r.resolve("GET", "/nope"), Resolved::NotFound);
        assert_eq!(r.resolve("GET", "/notes/"), Resolved::NotFound);
        assert_eq!(
            r.resolve("PUT", "/notes"),
            Resolved::MethodNotAllowed {
                allow: vec!["GET".into(), "HEAD".into(), "POST".into()]
            }
        );
        assert_eq!(handler(&r.resolve("HEAD", "/notes")), Some(1));
        assert_eq!(r.resolve("GET", "/notes/x").clone(), {
            Resolved::MethodNotAllowed {
                allow: vec!["DELETE".into()],
            }
        });
    }

    #[test]
    fn middleware_by_method_and_prefix_in_order() {
        let r = Router::new(&[
            reg("use", "*", "/api/*", 10),
            reg("use", "POST", "/api/*", 11),
            reg("use", "*", "/*", 12),
            reg("use", "GET", "/exact", 13),
        ])
        .unwrap();
        assert_eq!(r.chain("GET", "/api/x/y"), vec![10, 12]);
        assert_eq!(r.chain("POST", "/api"), vec![10, 11, 12]);
        assert_eq!(r.chain("GET", "/apix"), vec![12]);
        assert_eq!(r.chain("GET", "/exact"), vec![12, 13]);
        assert_eq!(r.chain("POST", "/exact"), vec![12]);
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Router::new(&[reg("route", "GET", "nope", 1)]).is_err());
        assert!(Router::new(&[reg("route", "GET", "/a/*/b", 1)]).is_err());
        assert!(Router::new(&[reg("route", "GET", "/a/:", 1)]).is_err());
    }
}
