// Package crashtest holds flowd's crash and fault tests. They run the real
// flowd binary (built into a temporary directory) on temporary state
// directories against an in-process fake OAuth provider, and kill it with
// SIGKILL at random moments to show that nothing acknowledged to a client
// is lost, every flow's history stays a legal path through the machine, no
// flow is left stuck, and no authorization code is redeemed twice.
// TestCrashDex does the same against a real OAuth server, Dex (see
// internal/dextest; skipped with the command that builds Dex when it is
// missing, failed under CI=true).
//
// The package has no code outside its tests. Environment:
//
//	FLOWD_CRASH_KILLS=n     SIGKILLs in TestCrash (default 200; 30 with -short)
//	FLOWD_CRASH_WORKERS=n   concurrent clients driving flows (default 8)
//	FLOWD_CRASH_SEED=n      the random seed, to replay a failing run
//	FLOWD_CRASH_RACE=1      build flowd with the race detector (slower)
//	FLOWD_CRASH_DEX_KILLS=n   SIGKILLs in TestCrashDex (default 40; 10 with -short)
//	FLOWD_CRASH_DEX_WORKERS=n fast clients in TestCrashDex (default 8)
//	FLOWD_CRASH_DEX_SLOW=n    clients that pause between login and callback (default 4)
package crashtest
