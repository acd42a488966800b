//! The Store interface and its SQL implementation (SQLite, later PostgreSQL), with migrations.
