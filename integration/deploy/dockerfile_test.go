package deploy

import (
	"bytes"
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/stretchr/testify/require"
	"golang.org/x/mod/modfile"
)

// repoRoot is the main module's directory.
var repoRoot = filepath.Join("..", "..")

// TestDockerfile checks deploy/Dockerfile without a Docker engine: it
// parses it with BuildKit's own parser, checks the stages (a golang builder
// of the main module's Go version, a distroless or scratch image running
// /lanyard as uid 65532), then runs the builder's `go build` line here and
// checks that the binary it makes is static (no ELF interpreter, no dynamic
// section, no shared library), stripped, built with -trimpath, and runs.
func TestDockerfile(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, "deploy", "Dockerfile"))
	require.NoError(t, err)
	defer f.Close()
	ast, err := parser.Parse(f)
	require.NoError(t, err, "BuildKit parser")
	for _, w := range ast.Warnings {
		t.Errorf("Dockerfile: %s", w.Short)
	}
	stages, metaArgs, err := instructions.Parse(ast.AST, nil)
	require.NoError(t, err, "Dockerfile instructions")
	require.Len(t, stages, 2, "a builder and the image")

	// The builder: golang of the main module's Go version.
	goVersion := ""
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Key == "GO_VERSION" && kv.Value != nil {
				goVersion = *kv.Value
			}
		}
	}
	mod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	require.NoError(t, err)
	mf, err := modfile.ParseLax("go.mod", mod, nil)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(mf.Go.Version, goVersion+"."), "GO_VERSION %s against go.mod's go %s", goVersion, mf.Go.Version)
	build := stages[0]
	require.Equal(t, "golang:${GO_VERSION}", build.BaseName)
	var buildLine string
	for _, c := range build.Commands {
		if run, ok := c.(*instructions.RunCommand); ok && strings.Contains(strings.Join(run.CmdLine, " "), "go build") {
			require.True(t, run.PrependShell, "the go build RUN is in shell form")
			buildLine = strings.Join(run.CmdLine, " ")
		}
	}
	require.NotEmpty(t, buildLine, "no RUN with go build in the builder stage")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`, "-o /out/lanyard", "./cmd/lanyard"} {
		require.Contains(t, buildLine, want)
	}

	// The image: /lanyard as distroless' nonroot user.
	image := stages[1]
	require.Contains(t, []string{"gcr.io/distroless/static:nonroot", "scratch"}, image.BaseName)
	var user string
	var entrypoint []string
	for _, c := range image.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.EntrypointCommand:
			require.False(t, c.PrependShell, "ENTRYPOINT in exec form: there is no shell")
			entrypoint = c.CmdLine
		}
	}
	require.Equal(t, "65532:65532", user)
	require.Equal(t, []string{"/lanyard"}, entrypoint)

	// The builder's go build, here, for this machine.
	root, err := filepath.Abs(repoRoot)
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "lanyard")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", strings.Replace(buildLine, "/out/lanyard", bin, 1))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOWORK=off", "TARGETOS="+runtime.GOOS, "TARGETARCH="+runtime.GOARCH)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", buildLine, out)
	t.Logf("built the image's binary in %s", time.Since(start).Round(time.Second))

	requireStatic(t, bin)
	data, err := os.ReadFile(bin)
	require.NoError(t, err)
	require.False(t, bytes.Contains(data, []byte(root+"/")), "-trimpath: the binary holds the build directory %s", root)

	help, err := exec.CommandContext(ctx, bin, "--help").CombinedOutput()
	require.NoError(t, err, "%s", help)
	require.Contains(t, string(help), "ca")
	require.Contains(t, string(help), "agent")
}

// requireStatic: an ELF executable the kernel runs by itself (no
// PT_INTERP), with no dynamic section and no shared library to load, and
// without symbol or DWARF tables (-ldflags="-s -w").
func requireStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, elf.ET_EXEC, f.Type, "a static executable, not a PIE")
	for _, p := range f.Progs {
		require.NotEqual(t, elf.PT_INTERP, p.Type, "program interpreter (dynamic loader)")
		require.NotEqual(t, elf.PT_DYNAMIC, p.Type, "dynamic segment")
	}
	for _, s := range f.Sections {
		require.NotContains(t, []string{".interp", ".dynamic", ".dynsym", ".symtab"}, s.Name)
		require.False(t, strings.HasPrefix(s.Name, ".debug") || strings.HasPrefix(s.Name, ".zdebug"), "DWARF section %s", s.Name)
	}
	libs, err := f.ImportedLibraries()
	require.NoError(t, err)
	require.Empty(t, libs, "shared libraries")
}
