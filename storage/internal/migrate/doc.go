// Package migrate applies a store's embedded schema migrations with goose
// (github.com/pressly/goose/v3), the one migration library of both stores,
// and refuses a database whose schema is newer than the code.
package migrate
