# firstboot.ps1 - run once by Autounattend.xml (FirstLogonCommands) in a kernel-hil lab image.
# Enables WinRM over HTTP for the host-only forward, test signing for unsigned test drivers,
# and kernel crash dumps.  The lab network is QEMU user mode: only the host reaches port 5985,
# through the 127.0.0.1 forward hil.windows.domain sets up.
$ErrorActionPreference = 'Stop'
Start-Transcript -Path C:\hil-firstboot.log -Append

# The NIC of a user-mode network shows up as "Public": WinRM refuses Public networks.
Get-NetConnectionProfile | Set-NetConnectionProfile -NetworkCategory Private

Enable-PSRemoting -Force -SkipNetworkProfileCheck
Set-Item -Path WSMan:\localhost\Service\AllowUnencrypted -Value $true   # HTTP + NTLM message encryption
Set-Item -Path WSMan:\localhost\Service\Auth\Basic -Value $false
Set-Item -Path WSMan:\localhost\MaxEnvelopeSizekb -Value 2048
Set-Item -Path WSMan:\localhost\Shell\MaxMemoryPerShellMB -Value 1024
Set-Service -Name WinRM -StartupType Automatic
New-NetFirewallRule -DisplayName 'kernel-hil WinRM' -Direction Inbound -Protocol TCP -LocalPort 5985 -Action Allow | Out-Null

# Unsigned (test-signed) drivers load only with test signing on; takes effect after reboot.
bcdedit /set testsigning on
# Complete memory dumps are too big for labs; kernel dumps keep the driver state.
Set-ItemProperty -Path HKLM:\SYSTEM\CurrentControlSet\Control\CrashControl -Name CrashDumpEnabled -Value 2
Set-ItemProperty -Path HKLM:\SYSTEM\CurrentControlSet\Control\CrashControl -Name AutoReboot -Value 0
# DbgPrint output for the IHV component (our drivers log at ERROR level anyway).
New-Item -Force -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Debug Print Filter' | Out-Null
Set-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Session Manager\Debug Print Filter' -Name IHVDRIVER -Type DWord -Value 0xf

New-Item -ItemType Directory -Force -Path C:\hil | Out-Null
Stop-Transcript
Restart-Computer -Force
