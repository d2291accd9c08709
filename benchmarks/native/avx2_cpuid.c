// LD_PRELOAD library: the process sees a CPU without AVX-512, AVX-VNNI or AMX (what an
// AVX2-only CPU such as a Zen 2/3 EPYC reports), so that every library that picks its
// kernels from CPUID at run time (ONNX Runtime's MLAS, CTranslate2, oneDNN, MKL, ATen,
// NumPy) takes its AVX2 path. Built and used by benchmarks/isa.py (--isa avx2-cpuid).
// How: CPUID faulting (arch_prctl ARCH_SET_CPUID 0, Linux on CPUs with "cpuid_fault")
// turns every CPUID instruction into a SIGSEGV; the handler runs the real CPUID with
// faulting briefly off and clears the feature bits before returning to the next
// instruction. Other segmentation faults go to the handler the program installed: this
// library's sigaction() keeps its own handler first and records the program's (Python's
// faulthandler, for one, installs a SIGSEGV handler that would otherwise take over). Code compiled with
// -march=native for this CPU still runs its AVX-512 instructions: only run-time dispatch
// is steered. Faulting is per thread and inherited by new threads and forks; execve
// resets it, and LD_PRELOAD installs it again in the new program.
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <asm/prctl.h>
#include <dlfcn.h>

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);
static struct sigaction previous;
static int installed;

static sigaction_fn real_sigaction(void) {
    static sigaction_fn real;
    if (!real) real = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return real;
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV || !installed) return real_sigaction()(sig, act, old);
    struct sigaction before = previous;
    if (act) previous = *act;
    if (old) *old = before;
    return 0;
}

static void cpuid_raw(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    ucontext_t *uc = (ucontext_t *)ctx;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] == 0x0f && ip[1] == 0xa2) {
        uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], r[4];
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
        cpuid_raw(leaf, sub, r);
        syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
        if (leaf == 7 && sub == 0) {  // AVX-512 families, AMX
            r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) |
                      (1u << 28) | (1u << 30) | (1u << 31));
            r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
            r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) |
                      (1u << 24) | (1u << 25));
        } else if (leaf == 7 && sub == 1) {  // AVX-VNNI, AVX512_BF16
            r[0] &= ~((1u << 4) | (1u << 5));
        }
        g[REG_RAX] = r[0]; g[REG_RBX] = r[1]; g[REG_RCX] = r[2]; g[REG_RDX] = r[3];
        g[REG_RIP] += 2;
        return;
    }
    // not a CPUID: the previous handler (or the default action)
    if (previous.sa_flags & SA_SIGINFO) { previous.sa_sigaction(sig, info, ctx); return; }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) { previous.sa_handler(sig); return; }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    installed = 0;
    real_sigaction()(SIGSEGV, &dfl, NULL);
    raise(SIGSEGV);
}

__attribute__((constructor)) static void install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (real_sigaction()(SIGSEGV, &sa, &previous) != 0) return;  // no handler: no faulting
    installed = 1;
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}
