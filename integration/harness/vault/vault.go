//go:build vault

package vault

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Environment and make target of the Vault binary.
const (
	EnvBinDir  = "LANYARD_VAULT_BIN"
	MakeTarget = "make vault-tools"
)

// DefaultStartTimeout bounds the wait for Vault to answer, unsealed.
const DefaultStartTimeout = 60 * time.Second

// Options configures Start.
type Options struct {
	// Persistent runs a file-storage server (initialised with one unseal
	// key) instead of dev mode, so that Restart keeps its state.
	Persistent bool
	// StartTimeout bounds the wait for an unsealed Vault (default 60s).
	StartTimeout time.Duration
}

// Server is a running Vault.
type Server struct {
	// Addr is http://127.0.0.1:<port>.
	Addr string
	// RootToken is the root token; Client uses it.
	RootToken string
	Client    *api.Client

	t          testing.TB
	opts       Options
	bin, dir   string
	port       int
	unsealKey  string
	logPath    string
	proc       *process
	configPath string
}

// Start starts Vault on a free 127.0.0.1 port, waits until it is unsealed
// and answers, and stops it when the test ends (logging its output if the
// test failed).
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	s := &Server{t: t, opts: opts, bin: Binary(t, "vault", EnvBinDir, MakeTarget), dir: t.TempDir()}
	s.logPath = filepath.Join(s.dir, "vault.log")
	port, err := freePort()
	if err != nil {
		t.Fatalf("vault: %v", err)
	}
	s.port = port
	s.Addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	t.Cleanup(func() {
		if s.proc != nil {
			s.proc.stop()
		}
		if t.Failed() {
			t.Logf("--- vault output, last 80 lines ---\n%s", tail(s.logPath, 80))
		}
	})
	start := time.Now()
	if err := s.start(); err != nil {
		t.Fatalf("vault: %v", err)
	}
	t.Logf("vault: %s ready in %s (persistent=%v)", s.Addr, time.Since(start).Round(time.Millisecond), opts.Persistent)
	return s
}

func (s *Server) start() error {
	env := []string{"HOME=" + s.dir, "PATH=" + os.Getenv("PATH"), "VAULT_LOG_LEVEL=info"}
	var args []string
	if s.opts.Persistent {
		if s.configPath == "" {
			s.configPath = filepath.Join(s.dir, "vault.hcl")
			cfg := fmt.Sprintf(`storage "file" { path = %q }
listener "tcp" {
  address     = "127.0.0.1:%d"
  tls_disable = true
}
disable_mlock = true
api_addr = %q
`, filepath.Join(s.dir, "data"), s.port, s.Addr)
			if err := os.WriteFile(s.configPath, []byte(cfg), 0o600); err != nil {
				return err
			}
		}
		args = []string{"server", "-config=" + s.configPath}
	} else {
		s.RootToken = randomHex()
		args = []string{"server", "-dev", "-dev-root-token-id=" + s.RootToken,
			fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", s.port), "-dev-no-store-token"}
	}
	p, err := startProcess("vault", s.bin, s.logPath, args, env)
	if err != nil {
		return err
	}
	s.proc = p
	cfg := api.DefaultConfig()
	cfg.Address = s.Addr
	cfg.MaxRetries = 0
	c, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	s.Client = c
	deadline := time.Now().Add(s.opts.StartTimeout)
	for {
		h, err := c.Sys().Health()
		if err == nil {
			if s.opts.Persistent && !h.Initialized {
				if err := s.initialize(); err != nil {
					return err
				}
				continue
			}
			if h.Sealed && s.unsealKey != "" {
				if _, err := c.Sys().Unseal(s.unsealKey); err != nil {
					return fmt.Errorf("unseal: %w", err)
				}
				continue
			}
			if !h.Sealed {
				break
			}
		}
		if !p.running() {
			return fmt.Errorf("vault exited: %v\n%s", p.waitErr, tail(s.logPath, 40))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s (last error %v)", s.opts.StartTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !s.opts.Persistent && s.unsealKey == "" {
		s.unsealKey = grepLog(s.logPath, "Unseal Key:")
		if s.unsealKey == "" {
			return errors.New("no unseal key in the dev server's output")
		}
	}
	c.SetToken(s.RootToken)
	return nil
}

func (s *Server) initialize() error {
	r, err := s.Client.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	s.unsealKey, s.RootToken = r.Keys[0], r.RootToken
	return nil
}

// Seal seals Vault (sys/seal): every request but health fails until Unseal.
func (s *Server) Seal(t testing.TB) {
	t.Helper()
	if err := s.Client.Sys().Seal(); err != nil {
		t.Fatalf("vault: seal: %v", err)
	}
}

// Unseal unseals Vault with its unseal key.
func (s *Server) Unseal(t testing.TB) {
	t.Helper()
	st, err := s.Client.Sys().Unseal(s.unsealKey)
	if err != nil {
		t.Fatalf("vault: unseal: %v", err)
	}
	if st.Sealed {
		t.Fatalf("vault: still sealed after the unseal key")
	}
}

// Stop stops the server (SIGTERM, then SIGKILL).
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.proc.stop()
}

// Restart starts a stopped persistent server again on the same port and
// state, and unseals it.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if !s.opts.Persistent {
		t.Fatalf("vault: Restart needs Options.Persistent (dev mode keeps no state)")
	}
	s.proc.stop()
	if err := s.start(); err != nil {
		t.Fatalf("vault: restart: %v", err)
	}
}

// Write writes data to path with the root token.
func (s *Server) Write(t testing.TB, path string, data map[string]any) *api.Secret {
	t.Helper()
	sec, err := s.Client.Logical().WriteWithContext(ctx(t), path, data)
	if err != nil {
		t.Fatalf("vault: write %s: %v", path, err)
	}
	return sec
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
