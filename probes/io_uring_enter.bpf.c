/*
 * io_uring_enter.bpf.c - what each io_uring_enter() of the traced process did
 * (the readable reference: io_uring_enter.bt).
 *
 * sys_enter keeps the call's arguments and start time in the thread itself
 * (task storage: no hash map, no lock); sys_exit completes them with the
 * result and the time spent. A syscall tracepoint puts every system call of
 * the machine on the tracing slow path while attached, which is why
 * aggregate mode runs this probe only when asked for.
 *
 * Events mode: one struct enter_event per call.
 * Aggregate mode: enter_nr_sqes (lhist of SQEs consumed per submitting call;
 * its total is nr_enters), enter_latency_ns (hist, submitting calls),
 * nr_wait_enters (calls with nothing to submit).
 */
#include "plugtrace.bpf.h"

/* the same number on every architecture: io_uring came after the syscall tables were unified */
#define NR_IO_URING_ENTER 426

#if defined(__TARGET_ARCH_x86)
#define SYSCALL_NR(regs) ((regs)->orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL_NR(regs) ((regs)->syscallno)
#else
#error "the syscall number's register is not known for this architecture"
#endif

struct call {
	uint64_t start_ns;  /* 0: no call of ours in flight */
	int32_t fd;
	uint32_t to_submit;
	uint32_t min_complete;
	uint32_t flags;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct call);
} calls SEC(".maps");

PERCPU_COUNTERS(enter_nr_sqes, LHIST_SLOTS);
PERCPU_COUNTERS(enter_latency_ns, HIST_SLOTS);
PERCPU_COUNTERS(nr_wait_enters, 1);

/* Attached first: a call whose enter ran before the enter program was attached is simply not seen. */
SEC("tp_btf/sys_exit")
int BPF_PROG(enter_exit, struct pt_regs *regs, long ret)
{
	struct call *call;
	uint64_t start, now;

	if (SYSCALL_NR(regs) != NR_IO_URING_ENTER)
		return 0;
	call = bpf_task_storage_get(&calls, bpf_get_current_task_btf(), 0, 0);
	if (!call || !call->start_ns)  /* this thread never submitted while traced, or its enter was not seen */
		return 0;
	start = call->start_ns;
	call->start_ns = 0;
	now = bpf_ktime_get_ns();
	if (events_mode) {
		struct enter_event rec = {
			.ts_ns = start, .latency_ns = now - start, .tid = (int32_t)bpf_get_current_pid_tgid(),
			.fd = call->fd, .to_submit = call->to_submit, .min_complete = call->min_complete,
			.flags = call->flags, .ret = ret,
		};

		emit(&rec, sizeof(rec));
		return 0;
	}
	lhist(&enter_nr_sqes, ret);
	hist(&enter_latency_ns, now - start);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(enter, struct pt_regs *regs, long id)
{
	struct call *call;
	uint32_t to_submit;

	if (id != NR_IO_URING_ENTER || !current_is_traced())
		return 0;
	to_submit = PT_REGS_PARM2_SYSCALL(regs);
	if (!events_mode && !to_submit) {
		bump(&nr_wait_enters, 0);
		return 0;
	}
	call = bpf_task_storage_get(&calls, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!call)
		return 0;
	if (events_mode) {
		call->fd = PT_REGS_PARM1_SYSCALL(regs);
		call->to_submit = to_submit;
		call->min_complete = PT_REGS_PARM3_SYSCALL(regs);
		call->flags = PT_REGS_PARM4_SYSCALL(regs);
	}
	call->start_ns = bpf_ktime_get_ns();
	return 0;
}
