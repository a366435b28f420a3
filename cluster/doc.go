// Package cluster holds the tests of flowd's cluster mode: several engines
// (flowd replicas) on one etcd log (package persist/etcdlog), against a
// real three-member etcd cluster started inside the test process on
// loopback (package persist/etcdlog/etcdtest). It has no code of its own.
package cluster
