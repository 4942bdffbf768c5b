//! Paging of long lists (devices, a task's devices): `limit` and `offset` query parameters,
//! and the page answered with the total, so a client knows how many pages there are.

use serde::{Deserialize, Serialize};

use super::problem::{Kind, Problem};

/// Items on a page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most items on one page.
pub const MAX_LIMIT: usize = 1000;

/// `limit` and `offset`, as asked.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Paging {
    /// Items on the page (1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
    /// Items skipped before the page.
    pub offset: Option<usize>,
}

/// One page of a list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    /// Items in the whole list (after filters).
    pub total: usize,
    /// Items skipped before this page.
    pub offset: usize,
    /// Most items this page could hold.
    pub limit: usize,
    /// The items.
    pub items: Vec<T>,
}

impl Paging {
    /// The page of `items` this paging asks for; a limit out of range is refused.
    pub fn page<T>(self, items: impl ExactSizeIterator<Item = T>) -> Result<Page<T>, Problem> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Problem::new(
                Kind::BadRequest,
                format!("limit must be from 1 to {MAX_LIMIT}"),
            ));
        }
        let offset = self.offset.unwrap_or(0);
        let total = items.len();
        Ok(Page {
            total,
            offset,
            limit,
            items: items.skip(offset).take(limit).collect(),
        })
    }
}

impl<T> Page<T> {
    /// The same page with `f` applied to each item.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            total: self.total,
            offset: self.offset,
            limit: self.limit,
            items: self.items.into_iter().map(f).collect(),
        }
    }
}
