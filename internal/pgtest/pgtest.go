package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options tune a Server.
type Options struct {
	// Fsync keeps fsync and synchronous_commit on, as in production (the
	// benchmark). Off by default: tests want speed, not durability.
	Fsync bool
	// Settings are extra postgresql.conf settings (name → value).
	Settings map[string]string
}

// Server is a PostgreSQL server on 127.0.0.1.
type Server struct {
	Port int
	dir  string // data directory and socket directory live here
	bin  string
	user *user.User // the OS user that runs the server; nil: the caller
	opts Options

	watchdog *exec.Cmd // stops the server if this process dies without Close

	mu        sync.Mutex
	templates map[string]error
	seq       int
}

// BinDir finds PostgreSQL's server programs: $LANYARD_PG_BIN, else the
// newest /usr/lib/postgresql/*/bin with initdb (Debian's layout).
func BinDir() (string, error) {
	if d := os.Getenv("LANYARD_PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) == 0 {
		return "", errors.New("pgtest: no PostgreSQL server found (/usr/lib/postgresql/*/bin/initdb): " +
			"install Debian's postgresql package (make test does) or set LANYARD_PG_BIN")
	}
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) < version(dirs[j]) })
	return filepath.Dir(dirs[len(dirs)-1]), nil
}

func version(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// Start initialises a data directory under a new temporary directory and
// starts the server. Stop it with Close.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "lanyard-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{dir: dir, bin: bin, opts: opts, templates: map[string]error{}}
	if os.Geteuid() == 0 { // PostgreSQL refuses to run as root
		if s.user, err = user.Lookup("postgres"); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(s.user.Uid)
		gid, _ := strconv.Atoi(s.user.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: %w", err)
		}
	}
	if err := s.run(ctx, "initdb", "-D", s.dataDir(), "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-instructions"); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if s.Port, err = freePort(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := s.writeConf(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := s.Resume(ctx); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s.startWatchdog()
	return s, nil
}

// startWatchdog starts a shell that outlives this process, waits for it
// to die and then stops the server and removes its directory: a test
// binary that panics (no Close) leaves nothing running. Close ends it.
func (s *Server) startWatchdog() {
	pgCtl := filepath.Join(s.bin, "pg_ctl")
	stop := fmt.Sprintf("%q stop -m immediate -D %q", pgCtl, s.dataDir())
	if s.user != nil {
		stop = fmt.Sprintf("runuser -u %q -- %s", s.user.Username, stop)
	}
	script := fmt.Sprintf(`while kill -0 %d 2>/dev/null; do sleep 1; done; %s >/dev/null 2>&1; rm -rf %q`,
		os.Getpid(), stop, s.dir)
	w := exec.Command("sh", "-c", script)
	w.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := w.Start(); err == nil {
		s.watchdog = w
		go func() { _ = w.Wait() }() // reap it when Close kills it
	}
}

func (s *Server) dataDir() string { return filepath.Join(s.dir, "data") }

func (s *Server) writeConf() error {
	set := map[string]string{
		"listen_addresses":        "'127.0.0.1'",
		"port":                    strconv.Itoa(s.Port),
		"unix_socket_directories": "'" + s.dir + "'",
		"max_connections":         "300",
		"shared_buffers":          "64MB",
		"log_min_messages":        "warning",
		"logging_collector":       "off",
	}
	if !s.opts.Fsync {
		set["fsync"] = "off"
		set["synchronous_commit"] = "off"
		set["full_page_writes"] = "off"
	}
	for k, v := range s.opts.Settings {
		set[k] = v
	}
	var b strings.Builder
	b.WriteString("\n# lanyard pgtest\n")
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, set[k])
	}
	f, err := os.OpenFile(filepath.Join(s.dataDir(), "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer f.Close()
	_, err = f.WriteString(b.String())
	return err
}

// run runs a PostgreSQL program as the server's OS user.
func (s *Server) run(ctx context.Context, prog string, args ...string) error {
	path := filepath.Join(s.bin, prog)
	var cmd *exec.Cmd
	if s.user != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", s.user.Username, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = s.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: %s: %w\n%s", prog, err, out)
	}
	return nil
}

// Resume starts the server (again) and waits until it accepts connections.
func (s *Server) Resume(ctx context.Context) error {
	return s.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", s.dataDir(),
		"-l", filepath.Join(s.dir, "server.log"))
}

// Pause stops the server (fast shutdown: connections are cut) and keeps its
// data for Resume.
func (s *Server) Pause(ctx context.Context) error {
	return s.run(ctx, "pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", s.dataDir())
}

// Close stops the server and removes its directory.
func (s *Server) Close() error {
	if s.watchdog != nil {
		_ = s.watchdog.Process.Kill()
	}
	err := s.run(context.Background(), "pg_ctl", "stop", "-w", "-t", "60", "-m", "immediate", "-D", s.dataDir())
	if _, statErr := os.Stat(filepath.Join(s.dataDir(), "postmaster.pid")); statErr != nil {
		err = nil // not running: nothing to stop
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// DSN is the connection string of database db as the postgres superuser.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// Log returns the server's log, for failing tests.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
	return string(b)
}

// Exec runs sql on the postgres database.
func (s *Server) Exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.DSN("postgres"))
	if err != nil {
		return fmt.Errorf("pgtest: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("pgtest: %s: %w", sql, err)
	}
	return nil
}

// Template makes database name once per Server by running init on it (a
// migration); later calls return init's first result. Nothing may stay
// connected to it when init returns: it is the template of NewDatabase.
func (s *Server) Template(ctx context.Context, name string, init func(ctx context.Context, dsn string) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err, ok := s.templates[name]; ok {
		return err
	}
	err := s.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if err == nil {
		err = init(ctx, s.DSN(name))
	}
	s.templates[name] = err
	return err
}

// CreateDatabase clones template into a new database and returns its name.
func (s *Server) CreateDatabase(ctx context.Context, template string) (string, error) {
	s.mu.Lock()
	s.seq++
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.seq)
	s.mu.Unlock()
	q := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		q += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	// A template still in use by a closing connection refuses to be cloned
	// for a moment; retry briefly.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.Exec(ctx, q)
		if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "being accessed by other users") {
			return name, err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DropDatabase drops db, cutting its connections.
func (s *Server) DropDatabase(ctx context.Context, db string) error {
	return s.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{db}.Sanitize()+" WITH (FORCE)")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
