// Package pgtest runs a real PostgreSQL server for tests and the benchmark:
// Debian's postgresql package (initdb and pg_ctl, run as the postgres user
// when the caller is root) on 127.0.0.1, a free port, and a temporary data
// directory that also holds the Unix socket. Tests start one Server per
// test binary (Main) and give each test its own database, cloned from a
// migrated template and dropped when the test ends (NewDatabase).
package pgtest
