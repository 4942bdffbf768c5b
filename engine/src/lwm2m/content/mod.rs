//! LwM2M content formats (placeholder; being written).
