package attest

import (
	"encoding/base64"
	"strings"
	"testing"
)

// Fuzz targets for everything read from outside: cgroup files and stat
// lines (procfs of other processes) and bearer tokens (callers).

func FuzzParseCgroupFile(f *testing.F) {
	f.Add([]byte("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + fixtureUIDu + ".slice/cri-containerd-" + fixtureCID + ".scope\n"))
	f.Add([]byte("12:memory:/kubepods-besteffort-pod" + fixtureUIDu + ".slice:cri-containerd:" + fixtureCID + "\n0::/\n"))
	f.Add([]byte("4:memory:/docker/" + otherCID + "/kubepods/besteffort/pod" + fixtureUID + "/" + fixtureCID + "\n"))
	f.Add([]byte("0::/../../pod" + fixtureUID + "/crio-conmon-" + fixtureCID + ".scope\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pc, ok, err := parseCgroupFile(data)
		if err != nil && ok {
			t.Fatal("ok with an error")
		}
		if ok {
			if len(pc.PodUID) != uidLength || strings.Contains(pc.PodUID, "_") {
				t.Fatalf("pod uid %q not canonical", pc.PodUID)
			}
			if len(pc.ContainerID) < minContainerIDLength || len(pc.ContainerID) > maxContainerIDLength {
				t.Fatalf("container id %q out of bounds", pc.ContainerID)
			}
		}
	})
}

func FuzzParseStartTime(f *testing.F) {
	f.Add([]byte("4242 (envoy) S 1 4242 4242 0 -1 4194560 7 0 0 0 0 0 0 0 20 0 1 0 987654 1234567 89\n"))
	f.Add([]byte("1 ()) ) S"))
	f.Add([]byte(")"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := parseStartTime(data)
		if err == nil && v == 0 {
			t.Fatal("zero start time without error")
		}
	})
}

func FuzzTokenServiceAccount(f *testing.F) {
	enc := base64.RawURLEncoding.EncodeToString
	f.Add(enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"kubernetes.io":{"namespace":"shop","serviceaccount":{"name":"web"}}}`)) + ".sig")
	f.Add(enc([]byte(`{}`)) + "." + enc([]byte(`{"kubernetes.io":{"namespace":"","serviceaccount":null}}`)) + ".")
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		ns, sa, err := tokenServiceAccount(token)
		if err != nil {
			if strings.Contains(err.Error(), token) && len(token) > 8 {
				t.Fatal("error message contains the token")
			}
			return
		}
		if validateServiceAccount(ns, sa) != nil {
			t.Fatalf("accepted invalid service account %q/%q", ns, sa)
		}
	})
}
