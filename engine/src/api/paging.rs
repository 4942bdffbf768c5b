//! Paging of long lists (devices, tasks, a task's devices, credentials, dead letters): a
//! `sort` order among those the list offers (`name` ascending, `-name` descending; the first
//! is the default), `limit`, and where the page starts: after an opaque `cursor` (the
//! `next_cursor` of the page before) or, for older clients, an `offset`.
//!
//! A cursor holds its sort order and the sort key of the last item it followed; every sort key
//! is unique in its list (ties broken by the item's id), so following cursors walks the list
//! with no item twice and none missed, whatever is added or removed meanwhile (an item added
//! before the cursor is not seen, one after it is). Offsets shift when items come and go.
//! Every page says the total, and the next page's cursor (null on the last page), also as a
//! `Link: <...>; rel="next"` header. Owns the parameters, the cursors and the page; the lists
//! are their routes'.

use std::cmp::Ordering;

use axum::Json;
use axum::http::{HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::problem::{Kind, Problem};

/// Items on a page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most items on one page.
pub const MAX_LIMIT: usize = 1000;

/// `sort`, `limit`, `cursor` and `offset`, as asked.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Paging {
    /// Items on the page (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
    /// Items skipped before the page (not with a cursor).
    pub offset: Option<usize>,
    /// The page starts after the item this names.
    pub cursor: Option<String>,
    /// The order: one of the list's [`SortBy`] names, `-` before it for descending.
    pub sort: Option<String>,
}

/// Where an item sorts: a number, then a text (the item's id, unique in its list).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SortKey(pub u64, pub String);

/// One order a list can be sorted in.
pub struct SortBy<T> {
    /// The `sort` value asking for it ascending.
    pub name: &'static str,
    /// Where an item sorts in it.
    pub key: fn(&T) -> SortKey,
}

/// A sort order as asked: which one, and which way.
struct Order<'a, T> {
    by: &'a SortBy<T>,
    descending: bool,
}

impl<T> Order<'_, T> {
    fn name(&self) -> String {
        let sign = if self.descending { "-" } else { "" };
        format!("{sign}{}", self.by.name)
    }

    fn compare(&self, a: &SortKey, b: &SortKey) -> Ordering {
        let ascending = a.cmp(b);
        if self.descending {
            ascending.reverse()
        } else {
            ascending
        }
    }
}

/// What a cursor holds, before it is made opaque.
#[derive(Serialize, Deserialize)]
struct Cursor {
    /// The sort order it walks.
    sort: String,
    /// The key of the last item it followed.
    after: SortKey,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("a cursor serializes"))
    }

    fn decode(text: &str) -> Result<Cursor, Problem> {
        URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| bad("cursor is not one this list gave"))
    }
}

fn bad(detail: impl Into<String>) -> Problem {
    Problem::new(Kind::BadRequest, detail)
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    /// Items in the whole list (after filters).
    pub total: usize,
    /// Items of the list before this page.
    pub offset: usize,
    /// Most items this page could hold.
    pub limit: usize,
    /// The cursor of the next page; null on the last.
    pub next_cursor: Option<String>,
    /// The items.
    pub items: Vec<T>,
}

/// Where a page starts, as asked.
#[derive(Debug, Clone, PartialEq)]
pub enum PageStart {
    /// After this many items.
    Offset(usize),
    /// After the item of this key (a cursor's).
    After(SortKey),
}

/// A page as asked, before the list is read: its order, where it starts, how many items.
pub struct Plan<'a, T> {
    order: Order<'a, T>,
    /// Where it starts.
    pub start: PageStart,
    /// Most items on it.
    pub limit: usize,
}

impl<T> Plan<'_, T> {
    /// True when the list is read from its end.
    pub fn descending(&self) -> bool {
        self.order.descending
    }

    /// The page of `read`: the items from where it starts, in its order (up to `limit + 1`:
    /// one more says there is a next page), `offset` of them before it in a list of `total`.
    pub fn page(&self, mut read: Vec<T>, offset: usize, total: usize) -> Page<T> {
        let more = read.len() > self.limit;
        read.truncate(self.limit);
        let key = self.order.by.key;
        let next_cursor = (more && !read.is_empty()).then(|| {
            Cursor {
                sort: self.order.name(),
                after: key(&read[read.len() - 1]),
            }
            .encode()
        });
        Page {
            total,
            offset,
            limit: self.limit,
            next_cursor,
            items: read,
        }
    }
}

impl Paging {
    /// The page this paging asks for, in one of `sorts` (the first by default); a limit out
    /// of range, an unknown order or a cursor this list did not give (or gave for another
    /// order) is refused.
    pub fn plan<'a, T>(&self, sorts: &'a [SortBy<T>]) -> Result<Plan<'a, T>, Problem> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(bad(format!("limit must be from 1 to {MAX_LIMIT}")));
        }
        let cursor = self.cursor.as_deref().map(Cursor::decode).transpose()?;
        let asked = self
            .sort
            .as_deref()
            .or(cursor.as_ref().map(|c| c.sort.as_str()));
        let order = order(asked, sorts)?;
        let start = match (cursor, self.offset) {
            (Some(_), Some(_)) => return Err(bad("give a cursor or an offset, not both")),
            (Some(cursor), None) if cursor.sort != order.name() => {
                return Err(bad("the cursor is of another sort order"));
            }
            (Some(cursor), None) => PageStart::After(cursor.after),
            (None, offset) => PageStart::Offset(offset.unwrap_or(0)),
        };
        Ok(Plan {
            order,
            start,
            limit,
        })
    }

    /// The page of `items` this paging asks for, sorted by one of `sorts` (the first by
    /// default), refused as [`Paging::plan`] refuses.
    pub fn page<T>(&self, mut items: Vec<T>, sorts: &[SortBy<T>]) -> Result<Page<T>, Problem> {
        let plan = self.plan(sorts)?;
        let key = plan.order.by.key;
        items.sort_by(|a, b| plan.order.compare(&key(a), &key(b)));
        let start = match &plan.start {
            PageStart::After(after) => items
                .partition_point(|item| plan.order.compare(&key(item), after) != Ordering::Greater),
            PageStart::Offset(offset) => (*offset).min(items.len()),
        };
        let total = items.len();
        let end = start
            .saturating_add(plan.limit)
            .saturating_add(1)
            .min(total);
        items.truncate(end);
        Ok(plan.page(items.split_off(start), start, total))
    }
}

/// The order named `asked` (the first of `sorts` when none is).
fn order<'a, T>(asked: Option<&str>, sorts: &'a [SortBy<T>]) -> Result<Order<'a, T>, Problem> {
    let Some(asked) = asked else {
        return Ok(Order {
            by: &sorts[0],
            descending: false,
        });
    };
    let (descending, name) = match asked.strip_prefix('-') {
        Some(name) => (true, name),
        None => (false, asked),
    };
    let by = sorts.iter().find(|by| by.name == name).ok_or_else(|| {
        let names: Vec<_> = sorts.iter().map(|by| by.name).collect();
        bad(format!(
            "sort is one of {} (a - before it for descending)",
            names.join(", ")
        ))
    })?;
    Ok(Order { by, descending })
}

impl<T> Page<T> {
    /// The same page with `f` applied to each item.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            total: self.total,
            offset: self.offset,
            limit: self.limit,
            next_cursor: self.next_cursor,
            items: self.items.into_iter().map(f).collect(),
        }
    }
}

impl<T: Serialize> Page<T> {
    /// The page as JSON, with a `Link` to the next one (the request `uri` with the next cursor
    /// instead of its cursor or offset) when there is one.
    pub fn linked(self, uri: &Uri) -> Response {
        let next = self
            .next_cursor
            .as_deref()
            .map(|cursor| next_link(uri, cursor));
        let mut response = Json(self).into_response();
        if let Some(link) = next.and_then(|link| HeaderValue::from_str(&link).ok()) {
            response.headers_mut().insert(header::LINK, link);
        }
        response
    }
}

/// `<path?query>; rel="next"`: `uri`'s query without its cursor and offset, and `cursor`.
fn next_link(uri: &Uri, cursor: &str) -> String {
    let kept = uri.query().unwrap_or("").split('&').filter(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        !pair.is_empty() && name != "cursor" && name != "offset"
    });
    let query: Vec<String> = kept
        .map(str::to_string)
        .chain([format!("cursor={cursor}")])
        .collect();
    format!("<{}?{}>; rel=\"next\"", uri.path(), query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SORTS: [SortBy<u64>; 1] = [SortBy {
        name: "n",
        key: |n| SortKey(*n, String::new()),
    }];

    fn paging(limit: usize, cursor: Option<String>, sort: &str) -> Paging {
        Paging {
            limit: Some(limit),
            offset: None,
            cursor,
            sort: Some(sort.into()),
        }
    }

    /// Every item, following cursors from the first page, `add` called between pages.
    fn walk(sort: &str, items: &mut Vec<u64>, mut add: impl FnMut(&mut Vec<u64>)) -> Vec<u64> {
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let page = paging(3, cursor, sort).page(items.clone(), &SORTS).unwrap();
            seen.extend(page.items);
            cursor = page.next_cursor;
            if cursor.is_none() {
                return seen;
            }
            add(items);
        }
    }

    #[test]
    fn cursors_walk_both_ways_without_gap_or_repeat_while_items_come() {
        let mut items: Vec<u64> = (0..10).map(|n| n * 10).collect();
        let mut next = 1;
        let seen = walk("n", &mut items, |items| {
            items.push(next);
            next += 10;
        });
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
        assert!((0..10).all(|n| seen.contains(&(n * 10))), "{seen:?}");

        let mut items: Vec<u64> = (0..10).collect();
        let seen = walk("-n", &mut items, |items| items.push(100));
        assert_eq!(seen, (0..10).rev().collect::<Vec<_>>());
    }

    #[test]
    fn bad_cursors_sorts_and_mixes_are_refused() {
        let page = paging(2, None, "n").page(vec![1, 2, 3], &SORTS).unwrap();
        let cursor = page.next_cursor.unwrap();
        for refused in [
            paging(2, Some("garbage".into()), "n"),
            paging(2, Some(cursor.clone()), "-n"),
            paging(2, None, "m"),
            Paging {
                offset: Some(1),
                ..paging(2, Some(cursor), "n")
            },
        ] {
            let problem = refused.page(vec![1, 2, 3], &SORTS).err().unwrap();
            assert_eq!(problem.kind, Kind::BadRequest, "{refused:?}");
        }
    }

    #[test]
    fn the_next_link_keeps_filters_and_replaces_the_position() {
        let uri: Uri = "/v1/devices?model=NB-1&offset=4&limit=2&cursor=abc"
            .parse()
            .unwrap();
        assert_eq!(
            next_link(&uri, "xyz"),
            "</v1/devices?model=NB-1&limit=2&cursor=xyz>; rel=\"next\""
        );
    }
}
