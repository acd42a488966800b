//! Pagination bounds shared by every list route.

/// Largest page a client may ask for; bounds memory and response size.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Page size when the client does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 20;

/// A validated page request (1-based page number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// 1-based page number.
    pub page: u32,
    /// Items per page, 1 to [`MAX_PAGE_SIZE`].
    pub page_size: u32,
}

/// Which pagination field was out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// `page` was 0.
    #[error("page must be at least 1")]
    Page,
    /// `page_size` was 0 or above the maximum.
    #[error("page_size must be between 1 and 100")]
    PageSize,
}

impl PageRequest {
    /// Validates optional `page` / `page_size` values, filling in the defaults.
    pub fn new(page: Option<u32>, page_size: Option<u32>) -> Result<Self, PageError> {
        let page = page.unwrap_or(1);
        let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if page == 0 {
            return Err(PageError::Page);
        }
        if page_size == 0 || page_size > MAX_PAGE_SIZE {
            return Err(PageError::PageSize);
        }
        Ok(Self { page, page_size })
    }

    /// Rows to skip before this page.
    pub fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.page_size)
    }

    /// Rows on this page at most.
    pub fn limit(&self) -> i64 {
        i64::from(self.page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_defaults_are_first_page_of_twenty() {
        let p = PageRequest::new(None, None).unwrap();
        assert_eq!((p.page, p.page_size, p.offset()), (1, 20, 0));
    }

    #[test]
    fn out_of_range_pages_are_rejected() {
        assert_eq!(PageRequest::new(Some(0), None), Err(PageError::Page));
        assert_eq!(PageRequest::new(None, Some(0)), Err(PageError::PageSize));
        assert_eq!(PageRequest::new(None, Some(101)), Err(PageError::PageSize));
        assert_eq!(PageRequest::new(Some(3), Some(10)).unwrap().offset(), 20);
    }
}
