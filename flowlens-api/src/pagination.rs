//! Page requests and page answers, with the defaults and the maximum from
//! `api.pagination`. A page size over the maximum is refused (400) rather than
//! silently cut, so a script never mistakes a short page for the end.

use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Transaction};

use crate::config::PaginationConfig;
use crate::error::ApiError;

/// A resolved page: what SQL needs.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
    /// `api.pagination.max_count`.
    pub max_count: u32,
}

impl PageRequest {
    /// `page` is 1-based.
    pub fn resolve(
        page: Option<u32>,
        page_size: Option<u32>,
        config: &PaginationConfig,
    ) -> Result<Self, ApiError> {
        let page = page.unwrap_or(1);
        if page == 0 {
            return Err(ApiError::BadRequest("page starts at 1".to_owned()));
        }
        let page_size = page_size.unwrap_or(config.default_page_size);
        if page_size == 0 || page_size > config.max_page_size {
            return Err(ApiError::BadRequest(format!(
                "page_size must be between 1 and {}",
                config.max_page_size
            )));
        }
        let offset = u64::from(page - 1) * u64::from(page_size);
        if offset > u64::from(config.max_offset) {
            return Err(ApiError::BadRequest(format!(
                "page {page} starts at row {offset}, past api.pagination.max_offset ({}): \
                 narrow the list with its filters instead",
                config.max_offset
            )));
        }
        Ok(Self {
            page,
            page_size,
            max_count: config.max_count,
        })
    }

    pub fn limit(self) -> i64 {
        i64::from(self.page_size)
    }

    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.page_size)
    }
}

/// One page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub page_size: u32,
    /// Rows matching the filters, over all pages, counted up to
    /// `api.pagination.max_count`.
    pub total: i64,
    /// True when there are more than `total` (the count stopped at the cap).
    pub total_capped: bool,
}

impl<T> Page<T> {
    /// `counted` is a count bounded at `max_count + 1` (see [`bounded_count`]).
    pub fn new(items: Vec<T>, request: PageRequest, counted: i64) -> Self {
        let cap = i64::from(request.max_count);
        Self {
            items,
            page: request.page,
            page_size: request.page_size,
            total: counted.min(cap),
            total_capped: counted > cap,
        }
    }
}

/// Makes `SELECT count(*) FROM {from}` + filter a count that stops after
/// `max_count + 1` rows: the query is wrapped as
/// `SELECT count(*) FROM (SELECT 1 FROM {from} WHERE ... LIMIT n) c`.
pub fn bounded_count<'a>(
    from: &str,
    page: PageRequest,
    filter: impl Fn(&mut QueryBuilder<'a, Postgres>) -> Result<(), ApiError>,
) -> Result<QueryBuilder<'a, Postgres>, ApiError> {
    let mut count = QueryBuilder::new(format!("SELECT count(*) FROM (SELECT 1 FROM {from}"));
    filter(&mut count)?;
    count
        .push(" LIMIT ")
        .push_bind(i64::from(page.max_count) + 1)
        .push(") c");
    Ok(count)
}

/// A read-only transaction on one snapshot (REPEATABLE READ), so a list's count and
/// its page agree even while the daemon writes.
pub async fn read_snapshot(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// One page of a list: a count of `{from}` (bounded, see [`bounded_count`]) and
/// `{select}`, both narrowed by
/// `filter` (which pushes a `WHERE` clause), the page ordered by `order`; both read in
/// one snapshot so `total` matches `items`. `order` must end on a unique key so pages
/// do not overlap.
pub async fn fetch_page<T>(
    pool: &PgPool,
    page: PageRequest,
    from: &str,
    select: &str,
    order: &str,
    filter: impl Fn(&mut QueryBuilder<'_, Postgres>) -> Result<(), ApiError>,
) -> Result<Page<T>, ApiError>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let mut count = bounded_count(from, page, &filter)?;
    let mut rows = QueryBuilder::new(select);
    filter(&mut rows)?;
    rows.push(format_args!(" ORDER BY {order} LIMIT "))
        .push_bind(page.limit())
        .push(" OFFSET ")
        .push_bind(page.offset());
    let mut tx = read_snapshot(pool).await?;
    let total: i64 = count.build_query_scalar().fetch_one(&mut *tx).await?;
    let items = rows.build_query_as::<T>().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(Page::new(items, page, total))
}
