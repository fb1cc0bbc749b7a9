package kube

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// startEtcd starts etcd and returns its client URL.
func startEtcd(t testing.TB, bin, dir string, opts Options) (string, error) {
	const attempts = 3
	for i := 1; ; i++ {
		ports, err := freePorts(2)
		if err != nil {
			return "", err
		}
		client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		data := filepath.Join(dir, fmt.Sprintf("etcd-%d", i))
		p, err := startProcess(t, opts.Name+"-etcd", bin, dir, []string{
			"--name=default", "--data-dir=" + data,
			"--listen-client-urls=" + client, "--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer, "--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=default=" + peer,
			"--unsafe-no-fsync", // test data: speed over durability
			"--log-level=warn",
		})
		if err != nil {
			return "", err
		}
		err = poll(p, opts.StartTimeout, func() error { return etcdHealthy(client) })
		if err == nil {
			return client, nil
		}
		p.stop()
		if i < attempts && p.lostPortRace() {
			t.Logf("kube: etcd lost a port race, retrying: %v", err)
			continue
		}
		return "", fmt.Errorf("etcd: %w\n%s", err, p.tail(logTail))
	}
}

func etcdHealthy(url string) error {
	resp, err := http.Get(url + "/health")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("etcd /health: %d %s", resp.StatusCode, body)
	}
	return nil
}
