package kube

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// MinTokenTTL is the shortest token TokenRequest issues (the API server
// refuses expirationSeconds under 600).
const MinTokenTTL = 10 * time.Minute

// Namespace creates namespace name unless it exists.
func (k *Kube) Namespace(t testing.TB, name string) {
	t.Helper()
	_, err := k.Client.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("kube: create namespace %s: %v", name, err)
	}
}

// ServiceAccount creates ns/name (and ns) unless it exists and returns it.
func (k *Kube) ServiceAccount(t testing.TB, ns, name string) *corev1.ServiceAccount {
	t.Helper()
	k.Namespace(t, ns)
	sas := k.Client.CoreV1().ServiceAccounts(ns)
	sa, err := sas.Create(ctx(t), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		sa, err = sas.Get(ctx(t), name, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatalf("kube: service account %s/%s: %v", ns, name, err)
	}
	return sa
}

// Node creates a Node object (no kubelet behind it) unless it exists and
// returns it.
func (k *Kube) Node(t testing.TB, name string) *corev1.Node {
	t.Helper()
	nodes := k.Client.CoreV1().Nodes()
	n, err := nodes.Create(ctx(t), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		n, err = nodes.Get(ctx(t), name, metav1.GetOptions{})
	}
	if err != nil {
		t.Fatalf("kube: node %s: %v", name, err)
	}
	return n
}

// Pod creates pod ns/name running as service account sa (which must
// exist), bound to node (empty: not scheduled), and returns it. With no
// kubelet the pod stays Pending. It mounts no token.
func (k *Kube) Pod(t testing.TB, ns, name, sa, node string) *corev1.Pod {
	t.Helper()
	p, err := k.Client.CoreV1().Pods(ns).Create(ctx(t), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": sa}},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: sa, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kube: create pod %s/%s: %v", ns, name, err)
	}
	return p
}

// DeletePod deletes ns/name at once (grace period 0: what the kubelet
// finally does once the containers have stopped; with no kubelet a
// graceful delete would never finish).
func (k *Kube) DeletePod(t testing.TB, ns, name string) {
	t.Helper()
	err := k.Client.CoreV1().Pods(ns).Delete(ctx(t), name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	if err != nil {
		t.Fatalf("kube: delete pod %s/%s: %v", ns, name, err)
	}
}

// TokenRequest asks the API server for a token of service account ns/sa
// for audiences, bound to pod when it is not nil (the token then names the
// pod and, when the pod has a node, the node), valid for ttl (at least
// MinTokenTTL).
func (k *Kube) TokenRequest(t testing.TB, ns, sa string, audiences []string, pod *corev1.Pod, ttl time.Duration) string {
	t.Helper()
	req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: audiences, ExpirationSeconds: ptr.To(int64(ttl / time.Second)),
	}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	resp, err := k.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx(t), sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kube: token request for %s/%s: %v", ns, sa, err)
	}
	return resp.Status.Token
}

// ServiceAccountKubeconfig creates service account ns/name with exactly
// rules through RBAC (a ClusterRole and its binding), waits until the API
// server enforces them, and returns the path of a kubeconfig that
// authenticates as it with a 24h token: how a component gets
// least-privilege access to the cluster.
func (k *Kube) ServiceAccountKubeconfig(t testing.TB, ns, name string, rules []rbacv1.PolicyRule) string {
	t.Helper()
	k.ServiceAccount(t, ns, name)
	role := "lanyard-test:" + ns + ":" + name
	if _, err := k.Client.RbacV1().ClusterRoles().Create(ctx(t), &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: rules,
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kube: cluster role %s: %v", role, err)
	}
	if _, err := k.Client.RbacV1().ClusterRoleBindings().Create(ctx(t), &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("kube: cluster role binding %s: %v", role, err)
	}
	user := "system:serviceaccount:" + ns + ":" + name
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, verb := range r.Verbs {
					k.waitAllowed(t, user, verb, g, res)
				}
			}
		}
	}
	token := k.TokenRequest(t, ns, name, nil, nil, 24*time.Hour)
	path := filepath.Join(t.TempDir(), ns+"-"+name+".kubeconfig")
	if err := k.writeKubeconfig(path, name, token); err != nil {
		t.Fatalf("kube: %v", err)
	}
	return path
}

// waitAllowed waits until a SubjectAccessReview says user may verb
// group/resource: RBAC changes reach the authorizer through an informer.
func (k *Kube) waitAllowed(t testing.TB, user, verb, group, resource string) {
	t.Helper()
	deadline := time.Now().Add(CallTimeout)
	for {
		sar, err := k.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx(t), &authzv1.SubjectAccessReview{
			Spec: authzv1.SubjectAccessReviewSpec{User: user, Groups: []string{"system:serviceaccounts", "system:authenticated"},
				ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Group: group, Resource: resource}},
		}, metav1.CreateOptions{})
		if err == nil && sar.Status.Allowed {
			return
		}
		if err == nil {
			err = errNotAllowed
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube: %s may not %s %s.%s: %v", user, verb, resource, group, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("kube: random token: %v", err))
	}
	return hex.EncodeToString(b)
}
