package main

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestTabulateAligns(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, tabulate(&b, []string{"SERIAL", "SPIFFE ID", "KIND"}, [][]string{
		{"abc", "spiffe://cluster.local/ns/a/sa/b", "workload"},
		{"0123456789abcdef", "spiffe://x/y", "agent"},
	}))
	require.Equal(t, ""+
		"SERIAL            SPIFFE ID                         KIND\n"+
		"abc               spiffe://cluster.local/ns/a/sa/b  workload\n"+
		"0123456789abcdef  spiffe://x/y                      agent\n", b.String())
}

func TestExitCodes(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitError},
		{usagef("bad flag"), exitUsage},
		{errors.New(`unknown command "bogus" for "lanyardctl"`), exitUsage},
		{status.Error(codes.NotFound, "x"), exitNotFound},
		{status.Error(codes.PermissionDenied, "x"), exitRefused},
		{status.Error(codes.Unauthenticated, "x"), exitRefused},
		{status.Error(codes.Unavailable, "x"), exitUnavailable},
		{status.Error(codes.DeadlineExceeded, "x"), exitUnavailable},
		{status.Error(codes.InvalidArgument, "x"), exitInvalid},
		{fmt.Errorf("wrapped: %w", status.Error(codes.NotFound, "x")), exitNotFound},
		{status.Error(codes.Internal, "x"), exitError},
	} {
		require.Equal(t, tt.want, exitCode(tt.err), "%v", tt.err)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs([]string{"completion", shell})
		require.NoError(t, root.Execute(), shell)
		require.Contains(t, out.String(), "lanyardctl", shell)
	}
}

func TestUsageErrorsFromCobra(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"certs", "list", "--nope"}, {"certs", "show"}, {"agents", "list", "extra"}, {"certs", "count", "--by", "pod"}, {"-o", "xml", "agents", "list"}} {
		root := newRoot()
		root.SetArgs(args)
		root.SetOut(&bytes.Buffer{})
		root.SetErr(&bytes.Buffer{})
		err := root.Execute()
		require.Equal(t, exitUsage, exitCode(err), "%v: %v", args, err)
	}
}
