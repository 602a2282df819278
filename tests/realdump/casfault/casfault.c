// SPDX-License-Identifier: GPL-2.0
/*
 * casfault: fails the kernel in one chosen way, for CAS's real-dump test bed
 * (tests/realdump/panics.py).  insmod casfault.ko kind=KIND, where KIND is
 *   null        write through a NULL pointer (an oops; panics with panic_on_oops)
 *   paging      write to an unmapped user address (an oops; panic_on_oops)
 *   gpf         write to a non-canonical address (general protection; panic_on_oops)
 *   stack       overrun a local array: the stack protector panics on return
 *   bug         BUG() (an oops; panics with panic_on_oops)
 *   warn        WARN() (panics with panic_on_warn)
 *   softlockup  a kthread spins with preemption off (panics with softlockup_panic)
 *   hung        a kthread waits uninterruptibly forever (panics with hung_task_panic)
 * Each failing function is noinline so that it is a frame of its own in the backtrace.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/completion.h>
#include <linux/preempt.h>
#include <linux/err.h>

static char *kind = "none";
module_param(kind, charp, 0444);
MODULE_PARM_DESC(kind, "null, paging, gpf, stack, bug, warn, softlockup or hung");

static DECLARE_COMPLETION(casfault_never);

static noinline void casfault_null_deref(void)
{
	int *volatile p = NULL;

	*p = 0xca5;
}

static noinline void casfault_paging(void)
{
	int *volatile p = (int *)0x1000UL;

	*p = 0xca5;
}

static noinline void casfault_gpf(void)
{
	int *volatile p = (int *)0xdead000000000000UL;

	*p = 0xca5;
}

static noinline void casfault_smash(void)
{
	char buf[8];
	volatile char *volatile p = buf;
	volatile int n = 64;
	int i;

	for (i = 0; i < n; i++)
		p[i] = 0x41;
}

static noinline void casfault_bug(void)
{
	BUG();
}

static noinline void casfault_warn(void)
{
	WARN(1, "casfault: a warning on purpose\n");
}

static noinline int casfault_spin(void *unused)
{
	preempt_disable();
	for (;;)
		cpu_relax();
	return 0;
}

static noinline int casfault_hang(void *unused)
{
	wait_for_completion(&casfault_never);
	return 0;
}

static int __init casfault_init(void)
{
	struct task_struct *t = NULL;

	pr_info("casfault: kind=%s\n", kind);
	if (!strcmp(kind, "null"))
		casfault_null_deref();
	else if (!strcmp(kind, "paging"))
		casfault_paging();
	else if (!strcmp(kind, "gpf"))
		casfault_gpf();
	else if (!strcmp(kind, "stack"))
		casfault_smash();
	else if (!strcmp(kind, "bug"))
		casfault_bug();
	else if (!strcmp(kind, "warn"))
		casfault_warn();
	else if (!strcmp(kind, "softlockup"))
		t = kthread_run(casfault_spin, NULL, "casfault_spin");
	else if (!strcmp(kind, "hung"))
		t = kthread_run(casfault_hang, NULL, "casfault_hang");
	else
		return -EINVAL;
	return IS_ERR(t) ? PTR_ERR(t) : 0;
}
module_init(casfault_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Fails the kernel on purpose, for CAS's real-dump tests");
