/*
 * hil_noop - the smallest possible exec target: no libc, no dynamic loader, exit(0) at once.
 * The exec storm runs it so that each exec costs the kernel's exec path and little else.
 * x86-64 Linux only. Build: gcc -O2 -static -nostdlib -s -o hil_noop hil_noop.c
 */
void _start(void)
{
	__asm__ volatile("mov $60, %eax\n\t"	/* __NR_exit */
			 "xor %edi, %edi\n\t"
			 "syscall");
	for (;;)
		;
}
